package faults

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// SocketOwner returns which of pids (the servers' process ids, by index)
// holds the client end of the loopback TCP connection from addr to one of
// the proxies, or -1: it finds the socket's inode in /proc/net/tcp by its
// local address and looks for it among each process's open files. A pid
// of 0 (a server not running) is skipped.
func SocketOwner(addr *net.TCPAddr, pids []int) int {
	ip4 := addr.IP.To4()
	if ip4 == nil {
		return -1
	}
	// /proc/net/tcp writes an IPv4 address as the little-endian hex of
	// its 32 bits, then the port in hex.
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip4[3], ip4[2], ip4[1], ip4[0], addr.Port)
	inode := socketInode(local)
	if inode == "" {
		return -1
	}
	want := "socket:[" + inode + "]"
	for i, pid := range pids {
		if pid <= 0 {
			continue
		}
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
				return i
			}
		}
	}
	return -1
}

// socketInode is the inode of the TCP socket whose local address is local
// (in /proc/net/tcp's form), "" if none.
func socketInode(local string) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && fs[1] == local {
			return fs[9]
		}
	}
	return ""
}
