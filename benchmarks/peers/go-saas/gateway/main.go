// gosaas-gateway: the Go peer of saas_gateway's read path (examples/saas/gateway): GET
// /v1/users/{id} and GET /healthz, with what lakh's gateway does around them (server.hpp
// route() and admit()): traceparent, per-address failed-authentication bucket, API key
// (keys.hpp), per-tenant rate and in-flight limits (limits.hpp), gRPC GetUser with the
// deadline, the trace and the service token (rpc.hpp prepare_call), the answers of http.hpp
// from_grpc(), request counter, latency histogram and a log line for each answer >= 400.
// Unlike lakh, the gRPC call ends when the client goes away (the request's context).
// Settings: the same variables as saas_gateway's (README.md).
package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"lakh.example/gosaas/common"
	pb "lakh.example/saaspb"
)

const service = "gateway"

type reply struct {
	status     int
	body       string
	retryAfter int
}

func fail(status int, message string) reply {
	return reply{status: status, body: common.Object(common.S("error", message))}
}

// unavailable is http.hpp unavailable(): 503 (Retry-After), 504 or 500, naming the trace.
func unavailable(status int, traceID string) reply {
	msg := "internal error"
	switch status {
	case 504:
		msg = "the request timed out; retry it with the same Idempotency-Key"
	case 503:
		msg = "temporarily unavailable; retry it with the same Idempotency-Key"
	}
	r := reply{status: status, body: common.Object(common.S("error", msg), common.S("trace_id", traceID))}
	if status == 503 {
		r.retryAfter = 1
	}
	return r
}

// fromGRPC is http.hpp from_grpc() for a call without an idempotency key.
func fromGRPC(err error, traceID string) reply {
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.InvalidArgument:
		return fail(400, s.Message())
	case codes.NotFound:
		return fail(404, s.Message())
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		return fail(409, s.Message())
	case codes.DeadlineExceeded:
		return unavailable(504, traceID)
	case codes.Unavailable, codes.ResourceExhausted:
		return unavailable(503, traceID)
	default:
		return unavailable(500, traceID)
	}
}

type gateway struct {
	auth         common.ServiceAuth
	deadline     time.Duration
	keys         *apiKeys
	limits       *tenantLimits
	authFailures *keyedBuckets[string]
	users        pb.UserServiceClient
	requests     common.Counter
	limited      common.Counter
	latency      *common.Histogram
}

// admit is server.hpp admit() for a tenant route: the reply that refuses the request, or
// the tenant and the release of its in-flight permit.
func (g *gateway) admit(r *http.Request) (*reply, int64, func(), error) {
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	if !g.authFailures.available(addr) {
		return &reply{429, common.Object(common.S("error", "too many failed authentications")), 10}, 0, nil, nil
	}
	tenant, err := g.keys.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return nil, 0, nil, err
	}
	if tenant == 0 {
		g.authFailures.take(addr)
		f := fail(401, "missing or wrong API key")
		return &f, 0, nil, nil
	}
	release, why := g.limits.admit(tenant)
	if release == nil {
		return &reply{429, common.Object(common.S("error", why)), 1}, 0, nil, nil
	}
	return nil, tenant, release, nil
}

// getUser is routes.hpp's GET /v1/users/{id}.
func (g *gateway) getUser(r *http.Request, tenant int64, trace common.Trace) reply {
	id, _ := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	ctx, cancel := context.WithTimeout(r.Context(), g.deadline)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", trace.Header(),
		"x-saas-caller", g.auth.Caller, "x-saas-token", g.auth.Sign())
	u, err := g.users.GetUser(ctx, &pb.GetUserRequest{TenantId: tenant, UserId: id})
	if err != nil {
		return fromGRPC(err, trace.TraceID)
	}
	return reply{status: 200, body: common.Object(common.I("id", u.Id), common.S("email", u.Email))}
}

// tenantRoute is server.hpp route() for a GET of a tenant.
func (g *gateway) tenantRoute(h func(*http.Request, int64, common.Trace) reply) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		trace := common.TraceOf(r.Header.Get("traceparent"))
		refused, tenant, release, err := g.admit(r)
		var rep reply
		errText := ""
		switch {
		case err != nil:
			errText = err.Error()
			if common.Transient(err) {
				rep = unavailable(503, trace.TraceID)
			} else {
				rep = unavailable(500, trace.TraceID)
			}
		case refused != nil:
			rep = *refused
		default:
			rep = h(r, tenant, trace)
		}
		if release != nil {
			defer release()
		}
		if rep.status == 429 {
			g.limited.Add()
		}
		hd := w.Header()
		hd["traceparent"] = []string{trace.Header()}
		if rep.retryAfter > 0 {
			hd["Retry-After"] = []string{strconv.Itoa(rep.retryAfter)}
		}
		hd["Content-Type"] = []string{"application/json"}
		hd["Content-Length"] = []string{strconv.Itoa(len(rep.body))}
		w.WriteHeader(rep.status)
		_, _ = w.Write([]byte(rep.body))
		g.latency.Record(time.Since(t0))
		if rep.status >= 400 { // reads are not logged one by one
			fields := map[string]any{"method": "GET", "path": r.URL.Path, "status": rep.status, "tenant": tenant}
			if errText != "" {
				fields["error"] = errText
			}
			level := "info"
			if rep.status >= 500 {
				level = "error"
			}
			common.Log(service, level, trace.TraceID, "request", fields)
		}
	}
}

func dial(addr string) pb.UserServiceClient {
	// Reconnects within a second of the service coming back, as rpc.hpp channel() does.
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 100 * time.Millisecond,
	}))
	if err != nil {
		common.Fatal(service, "gRPC channel: "+err.Error())
	}
	return pb.NewUserServiceClient(conn)
}

func main() {
	db := common.Pool(service, common.Require(service, "DATABASE_URL"), common.Integer(service, "DB_POOL_SIZE", 8, 1, 1000),
		common.Millis(service, "DB_ACQUIRE_TIMEOUT_MS", 1000), "")
	common.Secret(service, "GATEWAY_KEY_SECRET") // keys are minted by lakh's signup; required as there
	g := &gateway{
		auth:     common.ServiceAuth{Caller: "gateway", Secret: common.Secret(service, "SERVICE_TOKEN_SECRET")},
		deadline: common.Millis(service, "GRPC_DEADLINE_MS", 2000),
		keys: &apiKeys{db: db, cache: map[string]cachedKey{},
			ttl:         common.Millis(service, "API_KEY_CACHE_MS", 60000),
			negativeTTL: common.Millis(service, "API_KEY_NEGATIVE_CACHE_MS", 10000)},
		limits: newTenantLimits(float64(common.Integer(service, "TENANT_RATE", 1000, 1, 10000000)),
			float64(common.Integer(service, "TENANT_BURST", 2000, 1, 10000000)),
			common.Integer(service, "TENANT_CONCURRENCY", 8, 1, 100000)),
		authFailures: newKeyedBuckets[string](float64(common.Integer(service, "AUTH_FAILURE_RATE", 1, 1, 1000000)),
			float64(common.Integer(service, "AUTH_FAILURE_BURST", 20, 1, 1000000))),
		users:   dial(common.Get("USER_GRPC_ADDR", "127.0.0.1:15051")),
		latency: common.NewHistogram(),
	}
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler { // server.hpp's pre-routing handler
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g.requests.Add()
			// The head lakh's gateway writes: no Date.
			w.Header()["Date"] = nil
			next.ServeHTTP(w, r)
		})
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"3"}
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; version=0.0.4; charset=utf-8"}
		_, _ = w.Write([]byte(common.Text(
			map[string]*common.Counter{"saas_gateway_requests_total": &g.requests, "saas_gateway_limited_total": &g.limited},
			map[string]*common.Histogram{"saas_gateway_request_seconds": g.latency})))
	})
	r.Get("/v1/users/{id:[0-9]{1,18}}", g.tenantRoute(g.getUser))
	// lakh's gateway answers a request no route matches with a JSON 404, whatever its method.
	notFound := func(w http.ResponseWriter, _ *http.Request) {
		const body = `{"error":"no such route"}`
		w.Header()["Content-Type"] = []string{"application/json"}
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
		w.WriteHeader(404)
		_, _ = w.Write([]byte(body))
	}
	r.NotFound(notFound)
	r.MethodNotAllowed(notFound)
	addr := common.Get("GATEWAY_ADDR", "127.0.0.1") + ":" + common.Get("GATEWAY_PORT", "8090")
	common.Log(service, "info", "", "listening", map[string]any{"http": addr})
	// lakh's gateway's limits: 5 s to read a request, and idle between two; 5 s to write.
	srv := &http.Server{Addr: addr, Handler: r, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	err := srv.ListenAndServe()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		common.Fatal(service, err.Error())
	}
}
