package gateway

import "sync"

// taskKind says what a pool worker does with a connection.
type taskKind uint8

const (
	taskRead      taskKind = iota
	taskReadShort          // a read turn of a connection that ran out of its frame budget
	taskWrite
)

type task struct {
	c    *conn
	kind taskKind
}

// pool is a fixed set of goroutines draining a FIFO of tasks. Submitting
// never blocks: the queue grows instead. It stays bounded because a
// connection has at most one read task (taskRead or taskReadShort) and one
// write task queued at a time (see conn.rdSched and conn.wrSched), so it
// never holds more than two tasks per connection.
type pool struct {
	mu     sync.Mutex
	cond   sync.Cond
	q      []task // ring buffer
	head   int
	n      int
	closed bool
	wg     sync.WaitGroup
}

// newPool starts workers goroutines; each calls run with its own scratch
// state, created by newScratch once per worker.
func newPool(workers int, newScratch func() *scratch, run func(*scratch, task)) *pool {
	p := &pool{q: make([]task, 64)}
	p.cond.L = &p.mu
	p.wg.Add(workers)
	for range workers {
		go func() {
			defer p.wg.Done()
			s := newScratch()
			for {
				t, ok := p.next()
				if !ok {
					return
				}
				run(s, t)
			}
		}()
	}
	return p
}

func (p *pool) submit(t task) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	if p.n == len(p.q) {
		q := make([]task, 2*len(p.q))
		for i := range p.n {
			q[i] = p.q[(p.head+i)%len(p.q)]
		}
		p.q, p.head = q, 0
	}
	p.q[(p.head+p.n)%len(p.q)] = t
	p.n++
	p.mu.Unlock()
	p.cond.Signal()
}

func (p *pool) next() (task, bool) {
	p.mu.Lock()
	for p.n == 0 && !p.closed {
		p.cond.Wait()
	}
	if p.n == 0 {
		p.mu.Unlock()
		return task{}, false
	}
	t := p.q[p.head]
	p.q[p.head] = task{}
	p.head = (p.head + 1) % len(p.q)
	p.n--
	p.mu.Unlock()
	return t, true
}

// close lets the workers finish what is queued, then waits for them.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
}
