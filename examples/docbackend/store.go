package docbackend

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/syncgate/syncgate/brokers"
	"github.com/syncgate/syncgate/feed"
)

// Doc is a document's state at a position: the fields its edits set, and
// the seq and epoch of the last edit applied.
type Doc struct {
	State map[string]json.RawMessage `json:"state"`
	Seq   uint64                     `json:"seq"`
	Epoch string                     `json:"epoch"`
	// Gaps counts edits the feed could not supply (the log dropped them
	// before the backend read them: it was down longer than the history
	// window); a document with gaps needs repair.
	Gaps uint64 `json:"gaps,omitempty"`
}

// Store holds the documents and the feed position, in memory and, when
// it has a path, in one JSON file rewritten atomically (temporary file,
// rename) after every applied edit, so the position persisted is always
// the one of the state persisted. Safe for concurrent use.
type Store struct {
	path string

	mu    sync.Mutex
	docs  map[string]*Doc
	token string // the feed token of the last publication applied
}

type storeFile struct {
	Docs  map[string]*Doc `json:"docs"`
	Token string          `json:"token"`
}

// OpenStore loads the store at path (a missing file is an empty store);
// path "" keeps it in memory only.
func OpenStore(path string) (*Store, error) {
	s := &Store{path: path, docs: map[string]*Doc{}}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docbackend: store: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("docbackend: store %s: %w", path, err)
	}
	if f.Docs != nil {
		s.docs = f.Docs
	}
	s.token = f.Token
	return s, nil
}

// Resume is where the feed resumes: after the last publication applied
// (JetStream), or per document (Redis Streams).
func (s *Store) Resume(channelPrefix string) feed.Resume {
	s.mu.Lock()
	defer s.mu.Unlock()
	return feed.Resume{
		After: s.token,
		Channel: func(ch string) (brokers.Position, bool) {
			id, ok := strings.CutPrefix(ch, channelPrefix)
			if !ok {
				return brokers.Position{}, false
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			d, ok := s.docs[id]
			if !ok {
				return brokers.Position{}, false
			}
			return brokers.Position{Seq: d.Seq, Epoch: d.Epoch}, true
		},
	}
}

// Doc returns a copy of document id.
func (s *Store) Doc(id string) (Doc, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.docs[id]
	if !ok {
		return Doc{}, false
	}
	c := *d
	c.State = make(map[string]json.RawMessage, len(d.State))
	for k, v := range d.State {
		c.State[k] = v
	}
	return c, true
}

// Apply applies edit e, at position p of document id, and persists it with
// token. A position at or before the document's (in its epoch) is a
// redelivery (the feed is at least once) and changes nothing: applied is
// false. A new epoch (the broker lost its history and started the
// channel over) continues from the document's state.
func (s *Store) Apply(id string, p brokers.Position, e Edit, token string) (applied bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.docs[id]
	if d == nil {
		d = &Doc{State: map[string]json.RawMessage{}}
		s.docs[id] = d
	}
	if d.Epoch == p.Epoch && p.Seq <= d.Seq {
		return false, nil
	}
	switch {
	case d.Epoch == p.Epoch && p.Seq > d.Seq+1:
		d.Gaps += p.Seq - d.Seq - 1
	case d.Epoch != p.Epoch && p.Seq > 1:
		d.Gaps += p.Seq - 1
	}
	for k, v := range e.Set {
		d.State[k] = v
	}
	d.Seq, d.Epoch = p.Seq, p.Epoch
	if token != "" {
		s.token = token
	}
	return true, s.saveLocked()
}

// saveLocked writes the store's file.
func (s *Store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	b, err := json.Marshal(storeFile{Docs: s.docs, Token: s.token})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".docbackend-*")
	if err != nil {
		return fmt.Errorf("docbackend: store: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("docbackend: store: %w", err)
	}
	return nil
}
