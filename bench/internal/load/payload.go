// Package load holds the load driver's pieces that are free of process
// control: the study's message payload, encoded and scanned without
// reflection so that the harness spends little CPU per delivery.
package load

import (
	"math"
	"strconv"
)

// AppendMsg appends the payload {"i":I,"t":T} to b: the bytes encoding/json
// makes for a struct with those two fields, built without reflection.
func AppendMsg(b []byte, i int, t int64) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}')
}

// ScanMsg finds the message id and send time in a payload
// {"i":I,"t":T} by scanning its bytes, allowing the keys in either order
// and blanks around them. Anything else (another key, a string, a negative
// or oversized number) returns ok = false: the caller counts it as a bad
// payload.
func ScanMsg(b []byte) (i int, t int64, ok bool) {
	var haveI, haveT bool
	p := skipBlank(b, 0)
	if p >= len(b) || b[p] != '{' {
		return 0, 0, false
	}
	p = skipBlank(b, p+1)
	for {
		if p+4 > len(b) || b[p] != '"' || b[p+2] != '"' {
			return 0, 0, false
		}
		key := b[p+1]
		p = skipBlank(b, p+3)
		if p >= len(b) || b[p] != ':' {
			return 0, 0, false
		}
		p = skipBlank(b, p+1)
		var v int64
		n := 0
		for ; p < len(b) && b[p] >= '0' && b[p] <= '9'; p, n = p+1, n+1 {
			d := int64(b[p] - '0')
			if v > (math.MaxInt64-d)/10 {
				return 0, 0, false
			}
			v = v*10 + d
		}
		if n == 0 {
			return 0, 0, false
		}
		switch {
		case key == 'i' && !haveI:
			i, haveI = int(v), true
		case key == 't' && !haveT:
			t, haveT = v, true
		default:
			return 0, 0, false
		}
		p = skipBlank(b, p)
		if p >= len(b) {
			return 0, 0, false
		}
		switch b[p] {
		case ',':
			p = skipBlank(b, p+1)
		case '}':
			if skipBlank(b, p+1) != len(b) || !haveI || !haveT {
				return 0, 0, false
			}
			return i, t, true
		default:
			return 0, 0, false
		}
	}
}

func skipBlank(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}
