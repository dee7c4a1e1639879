package daemon

import (
	"net/netip"
	"time"
)

// Revoke ends src's grant for door at once; it reports whether there was
// a live one. An unknown door is an error.
func (d *Daemon) Revoke(door string, src netip.Addr) (bool, error) {
	now := time.Now()
	live, err := d.eng.Revoke(door, src, now)
	if err != nil {
		return false, err
	}
	// On every gateway, whether or not this one held the grant.
	d.publishRevoke(door, src, now)
	if live {
		d.m.GrantRevoked(door)
		d.log.Info("grant revoked", "door", door, "source", src.String(), "by", "operator")
		d.markUrgent()
	}
	return live, nil
}
