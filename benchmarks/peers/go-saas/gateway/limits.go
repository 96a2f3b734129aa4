package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// bucket is lakh::token_bucket: capacity (burst), rate per second, tokens refilled on use.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, rate, capacity float64) {
	if now.After(b.last) {
		b.tokens = min(capacity, b.tokens+rate*now.Sub(b.last).Seconds())
		b.last = now
	}
}

func min(a, b float64) float64 {
	if a < b {
		return a
	}
	return b
}

// keyedBuckets is limits.hpp keyed_buckets: one bucket per key, at most maxKeys (past it,
// buckets full again are dropped).
type keyedBuckets[K comparable] struct {
	rate, burst float64
	maxKeys     int
	mu          sync.Mutex
	buckets     map[K]*bucket
}

func newKeyedBuckets[K comparable](rate, burst float64) *keyedBuckets[K] {
	return &keyedBuckets[K]{rate: rate, burst: burst, maxKeys: 100000, buckets: map[K]*bucket{}}
}

// take takes a token of key's bucket if there is one.
func (k *keyedBuckets[K]) take(key K) bool {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.buckets) >= k.maxKeys {
		for key, b := range k.buckets {
			if b.tokens+k.rate*now.Sub(b.last).Seconds() >= k.burst {
				delete(k.buckets, key)
			}
		}
	}
	b, ok := k.buckets[key]
	if !ok {
		b = &bucket{tokens: k.burst, last: now}
		k.buckets[key] = b
	}
	b.refill(now, k.rate, k.burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// available says whether key has a token now (none is taken).
func (k *keyedBuckets[K]) available(key K) bool {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok {
		return true
	}
	b.refill(now, k.rate, k.burst)
	return b.tokens >= 1
}

// tenantLimits is limits.hpp tenant_limits: per tenant a rate and requests in flight (a
// non-blocking semaphore); past either, 429.
type tenantLimits struct {
	rate        *keyedBuckets[int64]
	concurrency int64
	mu          sync.RWMutex
	inFlight    map[int64]*atomic.Int64
}

func newTenantLimits(rate, burst float64, concurrency int64) *tenantLimits {
	return &tenantLimits{rate: newKeyedBuckets[int64](rate, burst), concurrency: concurrency,
		inFlight: map[int64]*atomic.Int64{}}
}

// admit is a release function for one request of tenant, or nil and why.
func (l *tenantLimits) admit(tenant int64) (func(), string) {
	if !l.rate.take(tenant) {
		return nil, "rate limit exceeded"
	}
	s := l.semaphore(tenant)
	for {
		n := s.Load()
		if n >= l.concurrency {
			return nil, "too many requests in flight"
		}
		if s.CompareAndSwap(n, n+1) {
			return func() { s.Add(-1) }, ""
		}
	}
}

func (l *tenantLimits) semaphore(tenant int64) *atomic.Int64 {
	l.mu.RLock()
	s := l.inFlight[tenant]
	l.mu.RUnlock()
	if s != nil {
		return s
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s = l.inFlight[tenant]; s == nil {
		s = &atomic.Int64{}
		l.inFlight[tenant] = s
	}
	return s
}
