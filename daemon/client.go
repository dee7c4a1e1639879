package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Client talks to a running daemon over its control socket, one
// connection per request; knockgate status, revoke and reload use it.
type Client struct {
	// Socket is the control socket's path.
	Socket string
}

// Status asks for the daemon's status report.
func (c Client) Status() (*StatusReport, error) {
	resp, err := c.call(Request{Op: "status"})
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}

// Revoke asks the daemon to end source's grant for door; it reports
// whether there was a live one.
func (c Client) Revoke(door, source string) (bool, error) {
	resp, err := c.call(Request{Op: "revoke", Door: door, Source: source})
	if err != nil {
		return false, err
	}
	return resp.Revoked, nil
}

// Reload asks the daemon to re-read its policy. A refused policy's
// diagnostics are the error.
func (c Client) Reload() (*ReloadOutcome, error) {
	resp, err := c.call(Request{Op: "reload"})
	if err != nil {
		return nil, err
	}
	return resp.Reload, nil
}

// call sends one request to the daemon.
func (c Client) call(req Request) (*Response, error) {
	path := c.Socket
	conn, err := net.DialTimeout("unix", path, 3*time.Second)
	if err != nil {
		return nil, fmt.Errorf("failed to reach the daemon at %s (is knockgate running, and are you root?): %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("failed to send request to %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return nil, fmt.Errorf("failed to read the daemon's answer from %s: %w", path, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
