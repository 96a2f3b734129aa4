package main

import (
	"context"
	"strconv"
	"sync"
	"time"

	"lakh.example/gosaas/common"
)

// apiKeys is keys.hpp api_keys: the tenant of a "Bearer <key>" header from the key's SHA-256
// in gateway.api_keys, cached for API_KEY_CACHE_MS (found) or API_KEY_NEGATIVE_CACHE_MS
// (not found).
type apiKeys struct {
	db               *common.DB
	ttl, negativeTTL time.Duration
	mu               sync.RWMutex
	cache            map[string]cachedKey // SHA-256 of a key -> its tenant
}

type cachedKey struct {
	tenant  int64 // 0: not a key
	expires time.Time
}

const maxCached = 100000

// authenticate is the tenant of an Authorization header value, or 0.
func (k *apiKeys) authenticate(ctx context.Context, header string) (int64, error) {
	if len(header) < 7 || header[:7] != "Bearer " || len(header) > 7+200 {
		return 0, nil
	}
	digest := common.SHA256Hex(header[7:])
	now := time.Now()
	k.mu.RLock()
	c, ok := k.cache[digest]
	k.mu.RUnlock()
	if ok && c.expires.After(now) {
		return c.tenant, nil
	}
	tenant, err := k.query(ctx, digest)
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.cache) >= maxCached {
		for d, c := range k.cache {
			if !c.expires.After(now) {
				delete(k.cache, d)
			}
		}
		if len(k.cache) >= maxCached {
			k.cache = map[string]cachedKey{} // an attack with many keys: start over
		}
	}
	ttl := k.negativeTTL
	if tenant != 0 {
		ttl = k.ttl
	}
	k.cache[digest] = cachedKey{tenant, now.Add(ttl)}
	return tenant, nil
}

// query runs the lookup as libpqxx's exec_params does: one unnamed statement, text parameter.
func (k *apiKeys) query(ctx context.Context, digest string) (int64, error) {
	conn, err := k.db.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	r := conn.Conn().PgConn().ExecParams(ctx, "SELECT tenant_id FROM gateway.api_keys WHERE key_sha256 = $1",
		[][]byte{[]byte(digest)}, nil, nil, nil).Read()
	if r.Err != nil {
		return 0, r.Err
	}
	if len(r.Rows) == 0 {
		return 0, nil
	}
	return strconv.ParseInt(string(r.Rows[0][0]), 10, 64)
}
