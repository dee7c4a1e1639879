package spa

import "bytes"

// UnwrapHTTP extracts the payload from the client's HTTP transport (-P
// http, spec §11): "GET /<payload> HTTP/1.0…", or the proxy form
// "GET http://<server>/<payload> …", with the payload's '+' and '/' sent
// as '-' and '_'. It returns a new slice with those mapped back, or false
// when req does not start like such a request. fwknopd 2.6.10 also wants a
// "User-Agent: Fwknop" header; that is policy and left to the caller.
func UnwrapHTTP(req []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(req, []byte("GET "))
	if !ok {
		return nil, false
	}
	if i := bytes.IndexAny(rest, " \t\r\n"); i >= 0 {
		rest = rest[:i] // the request target
	}
	if proxied, ok := bytes.CutPrefix(rest, []byte("http://")); ok {
		i := bytes.IndexByte(proxied, '/')
		if i < 0 {
			return nil, false
		}
		rest = proxied[i:]
	}
	rest, ok = bytes.CutPrefix(rest, []byte("/"))
	if !ok || len(rest) == 0 || len(rest) > MaxPayloadLen {
		return nil, false
	}
	out := make([]byte, len(rest))
	for i, c := range rest {
		switch c {
		case '-':
			c = '+'
		case '_':
			c = '/'
		}
		out[i] = c
	}
	return out, true
}
