package metrics

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

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
	FindInto(ctx context.Context, req pmclient.FindRequest, out any) error
}

var _ PM = (*pmclient.Client)(nil)

// Connector returns a client of the PM at pmAddress bearing grant ("" for
// none).
type Connector func(pmAddress, grant string) PM

// PMClients connects with pmclient over hc (nil: http.DefaultClient). An
// address without a scheme gets http://, as the original's "host:port" did.
func PMClients(hc *http.Client) Connector {
	return func(addr, grant string) PM {
		return pmclient.New(NormalizeAddress(addr), hc, pmclient.WithToken(grant))
	}
}

// NormalizeAddress adds http:// to an address without a scheme.
func NormalizeAddress(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr
}

// Server is the metrics service.
type Server struct {
	Logger  *slog.Logger
	Connect Connector
	// Access says who may call the service (the bearer of its instance
	// secret) and which PM it reaches: bound to one, shared (each request
	// names its PM and grant) or legacy (see services/internal/pmbind). The
	// zero value answers nothing but /healthz.
	Access access.Instance
	// Collection holds the sections in the PM (e-mission's analysis timeseries).
	Collection string
	// SectionKey is the section stream read (e-mission's
	// analysis.result.section.key); cleaned sections, named by MotionTypes.
	SectionKey string
	// MinEpsilon is the least cost a query may have (dp.MinEpsilon); the
	// user's PM enforces its own as well.
	MinEpsilon float64
}

// NewServer returns a server reading cleaned sections through connect.
func NewServer(logger *slog.Logger, connect Connector) *Server {
	return &Server{Logger: logger, Connect: connect, Collection: api.AnalysisTimeseries, SectionKey: KeyCleanedSection, MinEpsilon: dp.MinEpsilon}
}

// LocalDateRequest is the body of POST /metrics/local_date, as the original
// client_scripts/run_metrics.py sends it. QueryID is the versioned API's
// addition: a retry with the same id is charged once.
type LocalDateRequest struct {
	PMAddress string `json:"pm_address"`
	UUID      string `json:"uuid"`
	// Grant is the user's grant at that PM, for a service shared by many
	// users; a per-user service is bound to its PM at launch instead.
	Grant     string             `json:"grant,omitempty"`
	StartTime DateBound          `json:"start_time"`
	EndTime   DateBound          `json:"end_time"`
	Freq      string             `json:"freq"`
	Metric    string             `json:"metric"`
	Offset    map[string]float64 `json:"offset"`
	Alpha     map[string]float64 `json:"alpha"`
	QueryID   string             `json:"query_id,omitempty"`
}

// LocalDateResponse is the original answer: success, and on success one value
// per mode of offset (0 when the first period has none).
type LocalDateResponse struct {
	Success bool           `json:"success"`
	Results map[string]any `json:"results,omitempty"`
}

// LocalDateResponseV1 adds the cost charged, the query id and the period the
// values come from.
type LocalDateResponseV1 struct {
	LocalDateResponse
	PrivacyCost float64  `json:"privacy_cost"`
	QueryID     string   `json:"query_id"`
	Period      *Summary `json:"period,omitempty"`
}

func (r *LocalDateRequest) validate() (Freq, float64, error) {
	var errs []error
	if r.UUID == "" {
		errs = append(errs, errors.New("uuid is required"))
	}
	freq, err := ParseFreq(r.Freq)
	errs = append(errs, err)
	if _, err := newComponentFilter(r.StartTime, r.EndTime); err != nil {
		errs = append(errs, err)
	}
	if len(r.Offset) == 0 {
		errs = append(errs, errors.New("offset must map at least one mode to a number"))
	}
	cost, err := Cost(r.Metric, r.StartTime, r.EndTime, r.Offset, r.Alpha)
	errs = append(errs, err)
	return freq, cost, errors.Join(errs...)
}

// Handler serves the original and the versioned endpoints, /healthz and
// /readyz (open: ready once serving), and /metrics (its requests by route
// and code) to the bearer of the instance secret or a monitor's client
// certificate, as access.Guard decides.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /metrics/local_date", httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		resp, err := s.localDate(r.Context(), w, r)
		if err != nil {
			return err
		}
		return httpx.WriteJSON(w, http.StatusOK, resp.LocalDateResponse)
	}))
	mux.Handle("POST /v1/metrics/local_date", httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		resp, err := s.localDate(r.Context(), w, r)
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

func newQueryID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// localDate charges the query's cost to the user's budget, then (and only
// then) reads the sections and summarizes them. A failure after the charge is
// reported, never refunded: the same question under the same query id is
// answered later without a second charge.
func (s *Server) localDate(ctx context.Context, w http.ResponseWriter, r *http.Request) (LocalDateResponseV1, error) {
	var req LocalDateRequest
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{}); err != nil {
		return LocalDateResponseV1{}, err
	}
	target, err := pmbind.Resolve(s.Access, req.PMAddress, req.Grant)
	if err != nil {
		return LocalDateResponseV1{}, err
	}
	freq, cost, err := req.validate()
	if err == nil {
		err = dp.CheckCost(cost, s.MinEpsilon)
	}
	if err != nil {
		return LocalDateResponseV1{}, httpx.BadRequest("invalid metrics query: %w", err)
	}
	qid := req.QueryID
	if qid == "" {
		qid = newQueryID("metrics-")
	}
	question, err := api.QuestionDigest("metrics", struct {
		Start  DateBound          `json:"start_time"`
		End    DateBound          `json:"end_time"`
		Freq   string             `json:"freq"`
		Metric string             `json:"metric"`
		Offset map[string]float64 `json:"offset"`
		Alpha  map[string]float64 `json:"alpha"`
		Cost   float64            `json:"privacy_cost"`
	}{req.StartTime, req.EndTime, string(freq), req.Metric, req.Offset, req.Alpha, cost})
	if err != nil {
		return LocalDateResponseV1{}, err
	}
	out := LocalDateResponseV1{PrivacyCost: cost, QueryID: qid}
	pm := s.Connect(target.Address, target.Grant)
	spent, err := pm.Spend(ctx, api.SpendRequest{PrivacyCost: api.Cost(cost), QueryID: qid, Service: "metrics", Question: question})
	if err != nil {
		return out, pmbind.Error("could not charge the privacy budget", err)
	}
	if !spent.Success {
		s.Logger.Info("budget short", "query_id", qid, "cost", cost)
		return out, nil
	}
	period, err := s.firstPeriod(ctx, pm, req, freq)
	if err != nil {
		return out, pmbind.Error("could not compute the metrics", err)
	}
	out.Success = true
	out.Results = map[string]any{}
	for mode := range req.Offset {
		out.Results[mode] = 0
		if period != nil {
			if v, ok := period.Modes[mode]; ok {
				out.Results[mode] = v
			}
		}
	}
	out.Period = period
	return out, nil
}

// firstPeriod is the original's aggregate_metrics[0][0]: the first period of
// the one metric asked, over every section in the user's PM.
func (s *Server) firstPeriod(ctx context.Context, pm PM, req LocalDateRequest, freq Freq) (*Summary, error) {
	sections, err := s.readSections(ctx, pm)
	if err != nil {
		return nil, err
	}
	res, err := SummarizeByLocalDate(sections, req.StartTime, req.EndTime, freq, []string{req.Metric}, Options{Aggregate: true, Modes: s.modeNames()})
	if err != nil {
		return nil, err
	}
	if len(res.AggregateMetrics) == 0 || len(res.AggregateMetrics[0]) == 0 {
		return nil, nil
	}
	return &res.AggregateMetrics[0][0], nil
}

func (s *Server) modeNames() ModeNames {
	if s.SectionKey == KeyInferredSection {
		return PredictedModeTypes
	}
	return MotionTypes
}

func (s *Server) readSections(ctx context.Context, pm PM) ([]Section, error) {
	var entries []SectionEntry
	err := pm.FindInto(ctx, pmclient.FindRequest{
		Database:   api.DefaultDatabase,
		Collection: s.Collection,
		Filter:     map[string]any{"metadata.key": s.SectionKey, "invalid": map[string]any{"$exists": false}},
	}, &entries)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.SectionKey, err)
	}
	out := make([]Section, len(entries))
	for i, e := range entries {
		out[i] = e.Section()
	}
	return out, nil
}
