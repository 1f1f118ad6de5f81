package docbackend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Edit is what clients publish on a document's channel:
// {"set": {"<field>": <JSON value>, ...}} sets fields of the document.
type Edit struct {
	Set map[string]json.RawMessage `json:"set"`
}

// Limits of an edit.
const (
	maxFields     = 32
	maxFieldName  = 64
	maxFieldValue = 4096
)

// errEdit is a malformed edit.
var errEdit = errors.New("bad edit")

// ParseEdit decodes and checks an edit: an object with only "set", 1 to
// 32 fields named [A-Za-z0-9_]{1,64}, each value at most 4 KiB of JSON.
func ParseEdit(data []byte) (Edit, error) {
	var e Edit
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Edit{}, fmt.Errorf("%w: %v", errEdit, err)
	}
	if dec.More() {
		return Edit{}, fmt.Errorf("%w: more than one value", errEdit)
	}
	if len(e.Set) == 0 || len(e.Set) > maxFields {
		return Edit{}, fmt.Errorf("%w: set must have 1 to %d fields", errEdit, maxFields)
	}
	for k, v := range e.Set {
		if !validField(k) {
			return Edit{}, fmt.Errorf("%w: field name %.70q: want [A-Za-z0-9_]{1,%d}", errEdit, k, maxFieldName)
		}
		if len(v) > maxFieldValue {
			return Edit{}, fmt.Errorf("%w: field %s: value over %d bytes", errEdit, k, maxFieldValue)
		}
	}
	return e, nil
}

// Normalize returns the edit as the backend wants it stored: string
// values without leading and trailing whitespace, compact JSON. changed
// reports whether that differs from data.
func Normalize(data []byte, e Edit) (out []byte, changed bool) {
	for k, v := range e.Set {
		var s string
		if json.Unmarshal(v, &s) == nil {
			t := bytes.TrimSpace([]byte(s))
			if len(t) != len(s) {
				b, _ := json.Marshal(string(t))
				e.Set[k] = b
			}
		}
	}
	out, _ = json.Marshal(e) // map keys sorted: one form per edit
	return out, !bytes.Equal(out, data)
}

func validField(k string) bool {
	if len(k) == 0 || len(k) > maxFieldName {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
