package redisbase

// Sharding without Cluster: channels are spread over the configured
// servers by jump consistent hashing (Lamping and Veach) of the channel
// name, so adding a server as the last address moves about 1/(n+1) of the
// channels, all of them to the new server; removing or reordering
// addresses moves more. Both Redis backends place a channel the same way.

// HashString is the 64-bit hash JumpHash is fed with: FNV-1a, the same on
// every node and every run.
func HashString(s string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// JumpHash maps key to a bucket in [0, n).
func JumpHash(key uint64, n int) int {
	var b, j int64 = -1, 0
	for j < int64(n) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
