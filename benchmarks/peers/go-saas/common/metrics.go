package common

import (
	"fmt"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
)

// Counter and Histogram stand for lakh::counter and lakh::latency_histogram: atomic adds on
// the hot path, text for /metrics.
type Counter struct{ n atomic.Uint64 }

func (c *Counter) Add() { c.n.Add(1) }

// Histogram: power-of-two buckets of nanoseconds, their sum, min and max.
type Histogram struct {
	buckets [64]atomic.Uint64
	sum     atomic.Uint64
	min     atomic.Uint64
	max     atomic.Uint64
}

func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(^uint64(0))
	return h
}

func (h *Histogram) Record(d time.Duration) {
	ns := uint64(0)
	if d > 0 {
		ns = uint64(d)
	}
	h.buckets[bits.Len64(ns)%64].Add(1)
	h.sum.Add(ns)
	for m := h.min.Load(); ns < m && !h.min.CompareAndSwap(m, ns); m = h.min.Load() {
	}
	for m := h.max.Load(); ns > m && !h.max.CompareAndSwap(m, ns); m = h.max.Load() {
	}
}

// Text is a Prometheus-style exposition of counters and histograms by name.
func Text(counters map[string]*Counter, hists map[string]*Histogram) string {
	var b strings.Builder
	for name, c := range counters {
		fmt.Fprintf(&b, "%s %d\n", name, c.n.Load())
	}
	for name, h := range hists {
		var n uint64
		for i := range h.buckets {
			n += h.buckets[i].Load()
			if i > 0 {
				fmt.Fprintf(&b, "%s_bucket{le=\"%g\"} %d\n", name, float64(uint64(1)<<i)/1e9, n)
			}
		}
		fmt.Fprintf(&b, "%s_sum %g\n%s_count %d\n", name, float64(h.sum.Load())/1e9, name, n)
	}
	return b.String()
}
