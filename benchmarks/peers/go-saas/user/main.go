// gosaas-user: the Go peer of saas_user's read path (examples/saas/user): GetUser only (the
// other methods answer UNIMPLEMENTED), checked and answered as lakh's rpc_server does
// (common/rpc.hpp): the service token first (UNAUTHENTICATED), the trace of the call, then
// the query of common/db.hpp tenant_read(): "SELECT set_config('app.tenant_id', '<t>', true);
// EXECUTE get_user(<id>)" in one simple-query message on a pooled connection as saas_user,
// get_user prepared on each connection as saas_user's spec.prepared does, so row-level
// security hides another tenant's user (NOT_FOUND).
// Per-method latency and error metrics, and a log line for each call that is not OK. Serves
// /healthz and /metrics on USER_METRICS_PORT. Settings: the same variables as saas_user's.
package main

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"lakh.example/gosaas/common"
	pb "lakh.example/saaspb"
)

const service = "user"

type userService struct {
	pb.UnimplementedUserServiceServer
	db      *common.DB
	auth    common.ServiceAuth
	latency *common.Histogram
	errors  common.Counter
}

// run is rpc.hpp rpc_server::run(): authentication, the handler, metrics, the log line.
func (s *userService) run(ctx context.Context, method string, fn func(common.Trace) (*pb.User, error)) (*pb.User, error) {
	t0 := time.Now()
	md, _ := metadata.FromIncomingContext(ctx)
	trace := common.TraceOf(first(md.Get("traceparent")))
	var out *pb.User
	var err error
	detail := ""
	if s.auth.Verify(md.Get("x-saas-caller"), md.Get("x-saas-token")) == "" {
		err = status.Error(codes.Unauthenticated, "the caller is not authenticated")
	} else if out, err = fn(trace); err != nil {
		if _, isStatus := status.FromError(err); !isStatus {
			detail = err.Error() // logged only: answers never carry internal error text
			if common.Transient(err) {
				err = status.Error(codes.Unavailable, "temporarily unavailable; retry")
			} else {
				err = status.Error(codes.Internal, "internal error")
			}
		}
	}
	s.latency.Record(time.Since(t0))
	if err != nil {
		s.errors.Add()
		st, _ := status.FromError(err)
		level := "info"
		if c := st.Code(); c == codes.Unavailable || c == codes.Internal || c == codes.Unauthenticated {
			level = "error"
		}
		fields := map[string]any{"code": int(st.Code()), "answer": st.Message()}
		if detail != "" {
			fields["error"] = detail
		}
		common.Log(service, level, trace.TraceID, method+" failed", fields)
		return nil, err
	}
	return out, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (s *userService) GetUser(ctx context.Context, req *pb.GetUserRequest) (*pb.User, error) {
	return s.run(ctx, "GetUser", func(common.Trace) (*pb.User, error) {
		// Row-level security hides another tenant's user: it is NOT_FOUND, not forbidden.
		conn, err := s.db.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Release()
		sql := "SELECT set_config('app.tenant_id', '" + strconv.FormatInt(req.TenantId, 10) + "', true); " +
			"EXECUTE get_user(" + strconv.FormatInt(req.UserId, 10) + ")"
		results, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			return nil, err
		}
		if len(results) != 2 || len(results[1].Rows) == 0 {
			return nil, status.Error(codes.NotFound, "no user "+strconv.FormatInt(req.UserId, 10))
		}
		return &pb.User{TenantId: req.TenantId, Id: req.UserId, Email: string(results[1].Rows[0][0])}, nil
	})
}

func main() {
	s := &userService{
		db: common.Pool(service, common.Require(service, "DATABASE_URL"), common.Integer(service, "DB_POOL_SIZE", 16, 1, 1000),
			common.Millis(service, "DB_ACQUIRE_TIMEOUT_MS", 1000),
			"PREPARE get_user AS SELECT email FROM users.users WHERE id = $1"),
		auth:    common.ServiceAuth{Caller: "user", Secret: common.Secret(service, "SERVICE_TOKEN_SECRET")},
		latency: common.NewHistogram(),
	}
	addr := common.Get("USER_GRPC_ADDR", "127.0.0.1:15051")
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		common.Fatal(service, "cannot listen on "+addr+": "+err.Error())
	}
	metricsAddr := "127.0.0.1:" + common.Get("USER_METRICS_PORT", "9101")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; version=0.0.4; charset=utf-8"}
		_, _ = w.Write([]byte(common.Text(map[string]*common.Counter{"saas_rpc_errors_total": &s.errors},
			map[string]*common.Histogram{"saas_rpc_seconds": s.latency})))
	})
	go func() { common.Fatal(service, http.ListenAndServe(metricsAddr, mux).Error()) }()
	g := grpc.NewServer()
	pb.RegisterUserServiceServer(g, s)
	common.Log(service, "info", "", "listening", map[string]any{"grpc": addr, "http": metricsAddr})
	if err := g.Serve(lis); err != nil {
		common.Fatal(service, err.Error())
	}
}
