package natsname

import "strings"

// Token encodes s as one NATS subject token, injectively: two different
// strings never share a token, and no token is a wildcard or contains the
// token separator.
//
// Bytes of A-Z a-z 0-9 _ - : = @ are kept; every other byte (the '.' a
// channel name may contain, and anything a channel name may not, '~'
// included) becomes '~' followed by two upper-case hex digits. So "a.b"
// becomes "a~2Eb", which no channel name maps to, and '*' or '>' can never
// stand alone. The empty string, which has no token, becomes a lone "~":
// every other '~' in an encoding is followed by two hex digits.
func Token(s string) string {
	if s == "" {
		return "~"
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !keep(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	appendEscaped(&b, s)
	return b.String()
}

// AppendToken appends Token(s) to dst.
func AppendToken(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, '~')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '~', hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}

// ParseToken inverts Token. ok is false for a string Token never returns.
func ParseToken(tok string) (s string, ok bool) {
	if tok == "~" {
		return "", true
	}
	if tok == "" || !strings.Contains(tok, "~") {
		for i := 0; i < len(tok); i++ {
			if !keep(tok[i]) {
				return "", false
			}
		}
		return tok, tok != ""
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case keep(c):
			out = append(out, c)
		case c == '~' && i+2 < len(tok):
			hi, ok1 := unhex(tok[i+1])
			lo, ok2 := unhex(tok[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			v := hi<<4 | lo
			if keep(v) {
				return "", false // Token never escapes a kept byte
			}
			out = append(out, v)
			i += 2
		default:
			return "", false
		}
	}
	return string(out), true
}

const hexDigits = "0123456789ABCDEF"

func appendEscaped(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('~')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// keep reports whether c stands for itself in a token.
func keep(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '_', c == '-', c == ':', c == '=', c == '@':
		return true
	}
	return false
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Subject joins a prefix (dot-separated tokens, no wildcards) and the
// encoded tokens of parts into one subject.
func Subject(prefix string, parts ...string) string {
	n := len(prefix)
	for _, p := range parts {
		n += 1 + 3*len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, prefix...)
	for _, p := range parts {
		b = append(b, '.')
		b = AppendToken(b, p)
	}
	return string(b)
}

// ValidPrefix reports whether p can start subjects: one or more non-empty
// tokens of [A-Za-z0-9_-], separated by dots.
func ValidPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// StreamName derives a stream name from a subject prefix: "sg" and
// "HISTORY" give "SG_HISTORY".
func StreamName(prefix, what string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(prefix)) + "_" + what
}
