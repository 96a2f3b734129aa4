package common

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4/pgxpool"
)

// Pool opens a pool of at most size connections to url. pgx's own statement cache is off: the
// peer sends its statements as libpqxx does (simple query, or one unnamed statement).
func Pool(service, url string, size int64) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		Fatal(service, "DATABASE_URL: "+err.Error())
	}
	cfg.MaxConns = int32(size)
	cfg.ConnConfig.BuildStatementCache = nil
	p, err := pgxpool.ConnectConfig(context.Background(), cfg)
	if err != nil {
		Fatal(service, "cannot connect: "+err.Error())
	}
	return p
}

// AcquireError is a pool that gave no connection within the acquire timeout.
type AcquireError struct{ Err error }

func (e AcquireError) Error() string { return "no database connection: " + e.Err.Error() }

// Acquire leases a connection, waiting at most timeout for one (lakh::pg::with_connection).
func Acquire(ctx context.Context, p *pgxpool.Pool, timeout time.Duration) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := p.Acquire(actx)
	if err != nil {
		return nil, AcquireError{err}
	}
	return c, nil
}

// Transient says whether a retry may cure err (rpc.hpp transient(): no connection from the
// pool, a lost connection, a deadlock, serialization failure, lock or statement timeout).
func Transient(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true // no connection, a broken one, a network error
	}
	switch pe.Code {
	case "40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300":
		return true
	}
	return len(pe.Code) == 5 && pe.Code[:2] == "08"
}
