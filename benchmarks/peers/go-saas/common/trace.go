// Package common: what the Go peer's gateway and user service share, each a port of
// examples/saas/common: W3C traceparent values (trace.hpp), service tokens (auth.hpp), JSON
// text as nlohmann::json dumps it, structured logs (log.hpp), settings and metrics.
package common

import (
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Trace is a W3C Trace Context: trace id (32 hex), this hop's span id (16 hex), flags.
type Trace struct {
	TraceID  string
	ParentID string
	Flags    uint8
}

// Header is the traceparent value.
func (t Trace) Header() string {
	const hex = "0123456789abcdef"
	return "00-" + t.TraceID + "-" + t.ParentID + "-" + string([]byte{hex[t.Flags>>4], hex[t.Flags&15]})
}

func hexOK(s string) bool {
	nonzero := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			return false
		}
		nonzero = nonzero || c != '0'
	}
	return nonzero
}

// ParseTrace parses a traceparent header as trace.hpp does; ok is false when it is malformed.
func ParseTrace(v string) (Trace, bool) {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && v[55] != '-') {
		return Trace{}, false
	}
	version := v[0:2]
	if !hexOK("1"+version) || version == "ff" || (version == "00" && len(v) != 55) {
		return Trace{}, false
	}
	trace, parent, flags := v[3:35], v[36:52], v[53:55]
	if !hexOK(trace) || !hexOK(parent) || !hexOK("1"+flags) {
		return Trace{}, false
	}
	f, _ := strconv.ParseUint(flags, 16, 8)
	return Trace{trace, parent, uint8(f)}, true
}

// Like trace.hpp, ids come from a fast non-cryptographic generator, one per thread there:
// a pool of generators here (math/rand's global one takes a lock).
var rngs = sync.Pool{New: func() any { return rand.New(rand.NewSource(time.Now().UnixNano() ^ rand.Int63())) }}

func randomHex(n int) string {
	const hex = "0123456789abcdef"
	r := rngs.Get().(*rand.Rand)
	defer rngs.Put(r)
	for {
		var b strings.Builder
		b.Grow(n)
		for b.Len() < n {
			x := r.Uint64()
			for i := 0; i < 16 && b.Len() < n; i++ {
				b.WriteByte(hex[(x>>(4*uint(i)))&15])
			}
		}
		if s := b.String(); strings.Trim(s, "0") != "" {
			return s
		}
	}
}

// RootTrace is a new trace (random ids, sampled).
func RootTrace() Trace { return Trace{randomHex(32), randomHex(16), 1} }

// Child is the context of the next hop: same trace, a new span id.
func (t Trace) Child() Trace { return Trace{t.TraceID, randomHex(16), t.Flags} }

// TraceOf is the child of a parsed traceparent value, or a new root.
func TraceOf(traceparent string) Trace {
	if t, ok := ParseTrace(traceparent); ok {
		return t.Child()
	}
	return RootTrace()
}
