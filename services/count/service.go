package count

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// PM is what the service needs from a user's permission manager;
// *pmclient.Client implements it.
type PM interface {
	Spend(ctx context.Context, req api.SpendRequest) (api.SpendResponse, error)
	Refund(ctx context.Context, queryID, reason string) (api.RefundResponse, error)
	Count(ctx context.Context, req pmclient.FindRequest) (int64, error)
}

var _ PM = (*pmclient.Client)(nil)

// Connector returns a client of the PM at a request's pm_address.
type Connector func(pmAddress string) PM

// PMClients connects with pmclient over hc (nil: http.DefaultClient). An
// address without a scheme gets http://.
func PMClients(hc *http.Client) Connector {
	return func(addr string) PM {
		if !strings.Contains(addr, "://") {
			addr = "http://" + addr
		}
		return pmclient.New(addr, hc)
	}
}

// Server is the count service.
type Server struct {
	Logger     *slog.Logger
	Connect    Connector
	Collection string    // where the PM keeps analysis entries
	Noise      *dp.Noise // for noise shares (versioned API)
}

// NewServer returns a count server reading through connect.
func NewServer(logger *slog.Logger, connect Connector) *Server {
	return &Server{Logger: logger, Connect: connect, Collection: api.AnalysisTimeseries, Noise: dp.New()}
}

// Request is the body of POST /count_query, as client_scripts/run_count.py
// sends it. QueryID and NoiseShare are the versioned API's additions.
type Request struct {
	PMAddress string `json:"pm_address"`
	UUID      string `json:"uuid"`
	Query     Query  `json:"query"`
	QueryID   string `json:"query_id,omitempty"`
	// NoiseShare asks the service to add this user's share of distributed
	// discrete Laplace noise (of the query's ε) for a population of Users, so
	// the answer never carries the exact value.
	NoiseShare *struct {
		Users int `json:"users"`
	} `json:"noise_share,omitempty"`
}

// Response is the original answer.
type Response struct {
	Success bool   `json:"success"`
	Results *int64 `json:"results,omitempty"`
}

// ResponseV1 adds the cost charged, the query id, and whether Results carries
// a noise share.
type ResponseV1 struct {
	Response
	PrivacyCost float64 `json:"privacy_cost"`
	QueryID     string  `json:"query_id"`
	Noised      bool    `json:"noised,omitempty"`
}

// Handler serves the original and versioned endpoints and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /count_query", httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		resp, err := s.count(r.Context(), w, r, false)
		if err != nil {
			return err
		}
		return httpx.WriteJSON(w, http.StatusOK, resp.Response)
	}))
	mux.Handle("POST /v1/count_query", httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		resp, err := s.count(r.Context(), w, r, true)
		if err != nil {
			return err
		}
		return httpx.WriteJSON(w, http.StatusOK, resp)
	}))
	mux.HandleFunc("GET /healthz", httpx.Healthz)
	return mux
}

func (s *Server) count(ctx context.Context, w http.ResponseWriter, r *http.Request, v1 bool) (ResponseV1, error) {
	var req Request
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{}); err != nil {
		return ResponseV1{}, err
	}
	var errs []error
	if req.PMAddress == "" {
		errs = append(errs, errors.New("pm_address is required"))
	}
	if req.UUID == "" {
		errs = append(errs, errors.New("uuid is required"))
	}
	if req.NoiseShare != nil && !v1 {
		errs = append(errs, errors.New("noise_share is only served by /v1/count_query"))
	}
	if req.NoiseShare != nil && req.NoiseShare.Users < 1 {
		errs = append(errs, errors.New("noise_share.users must be ≥ 1"))
	}
	geom, err := req.Query.Validate()
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return ResponseV1{}, httpx.BadRequest("invalid count query: %w", err)
	}
	cost, _ := req.Query.Cost()
	qid := req.QueryID
	if qid == "" {
		var b [12]byte
		rand.Read(b[:])
		qid = "count-" + hex.EncodeToString(b[:])
	}
	out := ResponseV1{PrivacyCost: cost, QueryID: qid}
	pm := s.Connect(req.PMAddress)
	spent, err := pm.Spend(ctx, api.SpendRequest{PrivacyCost: api.Cost(cost), QueryID: qid, Service: "count"})
	if err != nil {
		return out, &httpx.Error{Code: http.StatusBadGateway, Msg: "could not charge the privacy budget at the PM", Err: err}
	}
	if !spent.Success {
		s.Logger.Info("budget short", "query_id", qid, "cost", cost)
		return out, nil
	}
	n, err := pm.Count(ctx, pmclient.FindRequest{
		Database:         api.DefaultDatabase,
		Collection:       s.Collection,
		Filter:           Filter(req.Query, geom),
		Limit:            1,
		WithLimitAndSkip: true,
	})
	if err != nil {
		if _, rerr := pm.Refund(context.WithoutCancel(ctx), qid, "count failed: "+err.Error()); rerr != nil {
			s.Logger.Error("refund failed", "query_id", qid, "err", rerr)
		}
		return out, &httpx.Error{Code: http.StatusBadGateway, Msg: "could not query the PM", Err: err}
	}
	result := int64(0)
	if n > 0 {
		result = 1
	}
	if req.NoiseShare != nil {
		sc, err := dp.ScaleFor(cost, 1)
		if err == nil {
			var share int64
			share, err = s.Noise.LaplaceShare(sc, req.NoiseShare.Users)
			result += share
		}
		if err != nil {
			// Never fall back to the exact answer.
			if _, rerr := pm.Refund(context.WithoutCancel(ctx), qid, "noise failed: "+err.Error()); rerr != nil {
				s.Logger.Error("refund failed", "query_id", qid, "err", rerr)
			}
			return out, httpx.BadRequest("cannot add a noise share: %w", err)
		}
		out.Noised = true
	}
	out.Success = true
	out.Results = &result
	return out, nil
}
