package count

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/services/internal/pmbind"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// PM is what the service needs from a user's permission manager;
// *pmclient.Client implements it.
type PM interface {
	Spend(ctx context.Context, req api.SpendRequest) (api.SpendResponse, error)
	Count(ctx context.Context, req pmclient.FindRequest) (int64, error)
}

var _ PM = (*pmclient.Client)(nil)

// Connector returns a client of the PM at pmAddress bearing grant ("" for
// none).
type Connector func(pmAddress, grant string) PM

// PMClients connects with pmclient over hc (nil: http.DefaultClient). An
// address without a scheme gets http://.
func PMClients(hc *http.Client) Connector {
	return func(addr, grant string) PM {
		return pmclient.New(pmbind.Normalize(addr), hc, pmclient.WithToken(grant))
	}
}

// Server is the count service.
type Server struct {
	Logger  *slog.Logger
	Connect Connector
	// Access says who may call the service (the bearer of its instance
	// secret) and which PM it reaches: bound to one, shared (each request
	// names its PM and grant) or legacy (see services/internal/pmbind). The
	// zero value answers nothing but /healthz.
	Access     access.Instance
	Collection string // where the PM keeps analysis entries
	// MinEpsilon is the least cost a query may have (dp.MinEpsilon); the
	// user's PM enforces its own as well.
	MinEpsilon float64
	// ExperimentSeed, when set, keys each noise share by the seed, the query
	// id and the question instead of the PM's secret seed, so a seeded
	// experiment gives the same answers run after run. Experiment mode only:
	// such noise protects nothing against whoever knows the seed.
	ExperimentSeed *uint64
}

// NewServer returns a count server reading through connect.
func NewServer(logger *slog.Logger, connect Connector) *Server {
	return &Server{Logger: logger, Connect: connect, Collection: api.AnalysisTimeseries, MinEpsilon: dp.MinEpsilon}
}

// Request is the body of POST /count_query, as client_scripts/run_count.py
// sends it. QueryID and NoiseShare are the versioned API's additions.
type Request struct {
	PMAddress string `json:"pm_address"`
	UUID      string `json:"uuid"`
	Query     Query  `json:"query"`
	QueryID   string `json:"query_id,omitempty"`
	// Grant is the user's grant at that PM, for a service shared by many
	// users; a per-user service is bound to its PM at launch instead.
	Grant string `json:"grant,omitempty"`
	// NoiseShare asks the service to add this user's share of distributed
	// discrete Laplace noise (of the query's ε) for a population of Users, so
	// the answer never carries the exact value. The share is computed for
	// min(Users, the user's own policy), which the PM decides.
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

// Handler serves the original and versioned endpoints, /healthz and
// /readyz (open: ready once serving), and /metrics (its requests by route
// and code) to the bearer of the instance secret or a monitor's client
// certificate, as access.Guard decides.
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
	// Authenticated requests are use; the health probe that reports it is not.
	use := access.NewLastUse(nil)
	mux.HandleFunc("GET /healthz", use.Healthz)
	m := obs.New()
	mux.Handle("GET "+obs.ReadyPath, obs.Ready(obs.Always))
	mux.Handle("GET "+obs.MetricsPath, m.Handler())
	return m.Instrument(mux, access.Guard(s.Access, s.Logger, use.Track(mux)))
}

func (s *Server) count(ctx context.Context, w http.ResponseWriter, r *http.Request, v1 bool) (ResponseV1, error) {
	var req Request
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{}); err != nil {
		return ResponseV1{}, err
	}
	target, err := pmbind.Resolve(s.Access, req.PMAddress, req.Grant)
	if err != nil {
		return ResponseV1{}, err
	}
	var errs []error
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
	if err := dp.CheckCost(cost, s.MinEpsilon); err != nil {
		return ResponseV1{}, httpx.BadRequest("invalid count query: %w", err)
	}
	qid := req.QueryID
	if qid == "" {
		var b [12]byte
		rand.Read(b[:])
		qid = "count-" + hex.EncodeToString(b[:])
	}
	claimed := 0
	if req.NoiseShare != nil {
		claimed = req.NoiseShare.Users
	}
	// The question a query id pays for: everything that shapes the answer.
	question, err := api.QuestionDigest("count", struct {
		Query Query   `json:"query"`
		Cost  float64 `json:"privacy_cost"`
		Users int     `json:"noise_share_users"`
	}{req.Query, cost, claimed})
	if err != nil {
		return ResponseV1{}, err
	}
	out := ResponseV1{PrivacyCost: cost, QueryID: qid}
	pm := s.Connect(target.Address, target.Grant)
	spent, err := pm.Spend(ctx, api.SpendRequest{PrivacyCost: api.Cost(cost), QueryID: qid, Service: "count",
		Question: question, Participants: claimed})
	if err != nil {
		return out, pmbind.Error("could not charge the privacy budget at the PM", err)
	}
	if !spent.Success {
		s.Logger.Info("budget short", "query_id", qid, "cost", cost)
		return out, nil
	}
	// Charged: from here a failure is reported, never refunded; the same
	// question under the same id is answered later without a second charge.
	n, err := pm.Count(ctx, pmclient.FindRequest{
		Database:         api.DefaultDatabase,
		Collection:       s.Collection,
		Filter:           Filter(req.Query, geom),
		Limit:            1,
		WithLimitAndSkip: true,
	})
	if err != nil {
		return out, pmbind.Error("could not query the PM", err)
	}
	result := int64(0)
	if n > 0 {
		result = 1
	}
	if req.NoiseShare != nil {
		share, err := noiseShare(cost, spent, s.noiseKey(spent, qid, question))
		if err != nil {
			// Never fall back to the exact answer.
			return out, &httpx.Error{Code: http.StatusBadGateway, Msg: "cannot add a noise share", Err: err}
		}
		result += share
		out.Noised = true
	}
	out.Success = true
	out.Results = &result
	return out, nil
}

// noiseKey is the key of a charge's noise: the PM's secret seed for it, or in
// experiment mode a digest of the experiment's seed, the query id and the
// question. Nil when the PM sent no usable seed.
func (s *Server) noiseKey(spent api.SpendResponse, qid, question string) *[32]byte {
	if s.ExperimentSeed != nil {
		k := sha256.Sum256(fmt.Appendf(nil, "%d\x00%s\x00%s", *s.ExperimentSeed, qid, question))
		return &k
	}
	seed, err := hex.DecodeString(spent.NoiseSeed)
	if err != nil || len(seed) != 32 {
		return nil
	}
	k := [32]byte(seed)
	return &k
}

// noiseShare draws this user's share of DLap(1/ε) for the participants the
// PM allowed, keyed by key: a replayed question gets the same share, so
// retries cannot average it away.
func noiseShare(cost float64, spent api.SpendResponse, key *[32]byte) (int64, error) {
	if spent.Participants < 1 {
		return 0, errors.New("the PM allowed no participants for the noise share")
	}
	if key == nil {
		return 0, errors.New("the PM sent no noise seed with the charge")
	}
	sc, err := dp.ScaleFor(cost, 1)
	if err != nil {
		return 0, err
	}
	return dp.New(dp.WithKey(*key)).LaplaceShare(sc, spent.Participants)
}
