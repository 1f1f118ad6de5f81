package redis

import (
	"errors"
	"strconv"
	"strings"

	"github.com/syncgate/syncgate/brokers"
)

// Decoding of the pub/sub payloads the scripts publish (see scripts.go).

// event is one decoded pub/sub payload.
type event struct {
	kind  byte // 'p' publication, 'j' join, 'l' leave, 'x' probe
	epoch string
	seq   uint64
	was   brokers.Position // publication: the provisional position it had, if any
	data  string           // publication data, or the probe token
	ttlMS int64            // join: the member's TTL
	user  string
	cl    string // client
}

var errBadPayload = errors.New("redis: malformed pub/sub payload")

// decodeEvent parses a payload. Strings in the result alias s.
func decodeEvent(s string) (event, error) {
	if s == "" {
		return event{}, errBadPayload
	}
	e := event{kind: s[0]}
	rest := s[1:]
	switch e.kind {
	case 'p', 'w':
		epoch, rest, ok := strings.Cut(rest, ":")
		if !ok || epoch == "" {
			return event{}, errBadPayload
		}
		num, data, ok := strings.Cut(rest, ":")
		if !ok {
			return event{}, errBadPayload
		}
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil || seq == 0 {
			return event{}, errBadPayload
		}
		if e.kind == 'w' {
			if e.was, data, err = cutWas(data); err != nil {
				return event{}, err
			}
			e.kind = 'p'
		}
		e.epoch, e.seq, e.data = epoch, seq, data
	case 'j':
		num, r, ok := strings.Cut(rest, ":")
		if !ok {
			return event{}, errBadPayload
		}
		ttl, err := strconv.ParseInt(num, 10, 64)
		if err != nil || ttl < 0 {
			return event{}, errBadPayload
		}
		e.ttlMS = ttl
		if e.cl, e.user, err = decodeMember(r); err != nil {
			return event{}, err
		}
	case 'l':
		var err error
		if e.cl, e.user, err = decodeMember(rest); err != nil {
			return event{}, err
		}
	case 'x':
		e.data = rest
	default:
		return event{}, errBadPayload
	}
	return e, nil
}

// decodeMember parses <len(client)>:<client><user>.
func decodeMember(s string) (client, user string, err error) {
	num, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", errBadPayload
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > len(rest) {
		return "", "", errBadPayload
	}
	return rest[:n], rest[n:], nil
}

// encodeWas is the publish script's was argument for a publication
// delivered under the provisional position was: <seq>:<len(epoch)>:<epoch>,
// or "" for none. The script stores it with the history entry (field w)
// and publishes the publication as w<epoch>:<seq>:<was><data>.
func encodeWas(was brokers.Position) string {
	if was.Epoch == "" {
		return ""
	}
	return strconv.FormatUint(was.Seq, 10) + ":" + strconv.Itoa(len(was.Epoch)) + ":" + was.Epoch
}

// cutWas parses an encodeWas prefix of s and returns the rest.
func cutWas(s string) (brokers.Position, string, error) {
	num, rest, ok := strings.Cut(s, ":")
	if !ok {
		return brokers.Position{}, "", errBadPayload
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil || seq == 0 {
		return brokers.Position{}, "", errBadPayload
	}
	ln, rest, ok := strings.Cut(rest, ":")
	if !ok {
		return brokers.Position{}, "", errBadPayload
	}
	n, err := strconv.Atoi(ln)
	if err != nil || n <= 0 || n > len(rest) {
		return brokers.Position{}, "", errBadPayload
	}
	return brokers.Position{Seq: seq, Epoch: rest[:n]}, rest[n:], nil
}
