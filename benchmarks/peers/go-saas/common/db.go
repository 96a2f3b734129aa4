package common

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// DB is a pool with lakh::pg::pool_options' size and acquire timeout.
type DB struct {
	pool    *pgxpool.Pool
	size    int32
	timeout time.Duration
}

// Pool opens a pool of at most size connections to url. pgx's own statement cache is off: the
// peer sends its statements as libpqxx does (simple query, or one unnamed statement). prepare
// (may be empty) runs on each new connection, as lakh's service_spec::prepared does through
// pool_options::on_connect: one simple-query message of PREPARE statements.
func Pool(service, url string, size int64, acquireTimeout time.Duration, prepare string) *DB {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		Fatal(service, "DATABASE_URL: "+err.Error())
	}
	cfg.MaxConns = int32(size)
	cfg.ConnConfig.BuildStatementCache = nil
	if prepare != "" {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.PgConn().Exec(ctx, prepare).ReadAll()
			return err
		}
	}
	p, err := pgxpool.ConnectConfig(context.Background(), cfg)
	if err != nil {
		Fatal(service, "cannot connect: "+err.Error())
	}
	return &DB{p, int32(size), acquireTimeout}
}

// AcquireError is a pool that gave no connection within the acquire timeout.
type AcquireError struct{ Err error }

func (e AcquireError) Error() string { return "no database connection: " + e.Err.Error() }

// Acquire leases a connection, waiting at most the acquire timeout for one to be free, as
// lakh::pg::with_connection does. Opening a new one (the pool below its size) is bounded by
// neither the timeout nor ctx there, so it is not here either: pgxpool would abandon the
// connect, and the next request would open it again.
func (d *DB) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	if d.pool.Stat().TotalConns() < d.size {
		c, err := d.pool.Acquire(context.Background())
		if err != nil {
			return nil, AcquireError{err}
		}
		return c, nil
	}
	actx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	c, err := d.pool.Acquire(actx)
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
