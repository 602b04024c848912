package pm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/query"
	"github.com/e-mission/upc/services/pm/store"
)

// maxSortKeys bounds a sort's keys (MongoDB allows 32).
const maxSortKeys = 32

// readQuery compiles what /data/find, find_one, count and distinct share.
func (s *Server) readQuery(w http.ResponseWriter, r *http.Request) (api.FindRequest, string, string, *query.Filter, store.FindOptions, error) {
	var req api.FindRequest
	var o store.FindOptions
	if err := s.decode(w, r, &req); err != nil {
		return req, "", "", nil, o, err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return req, "", "", nil, o, err
	}
	f, err := compileFilter(req.Filter, "filter")
	if err != nil {
		return req, "", "", nil, o, err
	}
	if f, err = readScope(r, f); err != nil {
		return req, "", "", nil, o, err
	}
	if req.Skip < 0 {
		return req, "", "", nil, o, httpx.BadRequest("skip must be ≥ 0")
	}
	o.Skip, o.Limit = req.Skip, req.Limit
	if o.Limit < 0 { // pymongo: a negative limit is a single batch of |limit|
		o.Limit = -o.Limit
	}
	if len(req.Sort) > maxSortKeys {
		return req, "", "", nil, o, httpx.BadRequest("sort has %d keys; at most %d", len(req.Sort), maxSortKeys)
	}
	for _, k := range req.Sort {
		o.Sort = append(o.Sort, query.SortKey{Path: k.Field, Desc: k.Dir < 0})
	}
	if o.Projection, err = query.CompileProjection(req.Projection); err != nil {
		return req, "", "", nil, o, httpx.BadRequest("%v", err)
	}
	return req, db, coll, f, o, nil
}

func (s *Server) find(w http.ResponseWriter, r *http.Request) error {
	_, db, coll, f, o, err := s.readQuery(w, r)
	if err != nil {
		return err
	}
	raws, ok, err := s.st.FindRaw(db, coll, f, o)
	if err != nil {
		return err
	}
	if ok {
		return writeRawFind(w, raws)
	}
	docs, _, err := s.st.Find(r.Context(), db, coll, f, o)
	if err != nil {
		return err
	}
	if docs == nil {
		docs = []map[string]any{}
	}
	return httpx.WriteJSON(w, http.StatusOK, api.FindResponse{Data: docs})
}

// writeRawFind answers a find with the documents' stored JSON as they are.
func writeRawFind(w http.ResponseWriter, docs [][]byte) error {
	n := len(`{"data":[]}`) + 1
	for _, d := range docs {
		n += len(d) + 1
	}
	buf := make([]byte, 0, n)
	buf = append(buf, `{"data":[`...)
	for i, d := range docs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, d...)
	}
	buf = append(buf, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(buf)
	return err
}

func (s *Server) findOne(w http.ResponseWriter, r *http.Request) error {
	_, db, coll, f, o, err := s.readQuery(w, r)
	if err != nil {
		return err
	}
	o.Limit = 1
	docs, _, err := s.st.Find(r.Context(), db, coll, f, o)
	if err != nil {
		return err
	}
	var out api.FindOneResponse
	if len(docs) > 0 {
		out.Data = docs[0]
	}
	return httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) count(w http.ResponseWriter, r *http.Request) error {
	req, db, coll, f, o, err := s.readQuery(w, r)
	if err != nil {
		return err
	}
	skip, limit := int64(0), int64(0)
	if req.WithLimitAndSkip {
		skip, limit = o.Skip, o.Limit
	}
	n, err := s.st.Count(r.Context(), db, coll, f, skip, limit)
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, api.CountResponse{Count: n})
}

func (s *Server) distinct(w http.ResponseWriter, r *http.Request) error {
	req, db, coll, f, _, err := s.readQuery(w, r)
	if err != nil {
		return err
	}
	if req.DistinctKey == "" {
		return httpx.BadRequest("distinct_key is required")
	}
	docs, _, err := s.st.Find(r.Context(), db, coll, f, store.FindOptions{})
	if err != nil {
		return err
	}
	vals, err := query.Distinct(docs, req.DistinctKey)
	if err != nil {
		return httpx.BadRequest("distinct_key: %v", err)
	}
	return httpx.WriteJSON(w, http.StatusOK, api.DistinctResponse{Distinct: vals})
}

// rawDocuments checks what a client asks to store: one document, or a
// non-empty list with many. Plain documents stay bytes; others are decoded
// and normalized (store.ParseDoc).
func rawDocuments(raw json.RawMessage, many bool, field string) ([]store.Doc, error) {
	if !many {
		d, err := store.ParseDoc(raw)
		if errors.Is(err, store.ErrNotDocument) {
			return nil, httpx.BadRequest("%s must be a document (JSON object)", field)
		}
		if err != nil {
			return nil, httpx.BadRequest("%s: %v", field, err)
		}
		return []store.Doc{d}, nil
	}
	list, isArray := store.SplitArray(raw)
	if !isArray || len(list) == 0 {
		return nil, httpx.BadRequest("%s must be a non-empty list of documents", field)
	}
	out := make([]store.Doc, len(list))
	for i, e := range list {
		d, err := store.ParseDoc(e)
		if errors.Is(err, store.ErrNotDocument) {
			return nil, httpx.BadRequest("%s[%d] must be a document (JSON object)", field, i)
		}
		if err != nil {
			return nil, httpx.BadRequest("%s[%d]: %v", field, i, err)
		}
		out[i] = d
	}
	return out, nil
}

func (s *Server) insert(w http.ResponseWriter, r *http.Request) error {
	// Data decodes into raw (an interface holding a pointer is decoded
	// into), so documents are parsed once, by rawDocuments.
	var raw json.RawMessage
	req := api.InsertRequest{Data: &raw}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	docs, err := rawDocuments(raw, req.IsMany, "data")
	if err != nil {
		return err
	}
	if err := checkInsert(r, docs); err != nil {
		return err
	}
	ids, err := s.st.InsertDocs(db, coll, docs)
	if err != nil {
		return err
	}
	out := api.InsertResponse{Acknowledged: true}
	if req.IsMany {
		out.InsertedIDs = ids
	} else {
		out.InsertedID = ids[0]
	}
	return httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) insertDeprecated(w http.ResponseWriter, r *http.Request) error {
	var raw json.RawMessage
	req := api.InsertDeprecatedRequest{DocOrDocs: &raw} // as in insert
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	many := bytes.HasPrefix(bytes.TrimSpace(raw), []byte("["))
	docs, err := rawDocuments(raw, many, "doc_or_docs")
	if err != nil {
		return err
	}
	if err := checkInsert(r, docs); err != nil {
		return err
	}
	ids, err := s.st.InsertDocs(db, coll, docs)
	if err != nil {
		return err
	}
	if many {
		return httpx.WriteJSON(w, http.StatusOK, api.DeprecatedResponse{Resp: ids})
	}
	return httpx.WriteJSON(w, http.StatusOK, api.DeprecatedResponse{Resp: ids[0]})
}

// rawUpdate is pymongo's raw_result of an update.
func rawUpdate(res store.UpdateResult) map[string]any {
	n := res.Matched
	raw := map[string]any{"n": n, "nModified": res.Modified, "ok": 1.0, "updatedExisting": res.Matched > 0}
	if res.UpsertedID != nil {
		raw["n"] = 1
		raw["upserted"] = res.UpsertedID
	}
	return raw
}

func (s *Server) doUpdate(w http.ResponseWriter, r *http.Request, replace bool) error {
	var req api.UpdateRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	f, err := compileFilter(req.Query, "query")
	if err != nil {
		return err
	}
	f, check, err := writeScope(r, f)
	if err != nil {
		return err
	}
	if req.Data == nil {
		return httpx.BadRequest("data (the update document) is required")
	}
	u, err := query.CompileUpdate(req.Data, replace, false)
	if err != nil {
		return httpx.BadRequest("data: %v", err)
	}
	many := req.IsMany && !replace
	res, err := s.st.UpdateChecked(r.Context(), db, coll, f, u, many, req.Upsert, check)
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, api.UpdateResponse{
		Acknowledged: true, MatchedCount: res.Matched, ModifiedCount: res.Modified,
		RawResult: rawUpdate(res), UpsertedID: res.UpsertedID,
	})
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) error { return s.doUpdate(w, r, false) }

// bulkUpdate applies many updates to one collection as one transaction (one
// fsync): every update is checked before anything is written, and a failure
// of any writes none.
func (s *Server) bulkUpdate(w http.ResponseWriter, r *http.Request) error {
	var req api.BulkUpdateRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	switch n := len(req.Updates); {
	case n == 0:
		return httpx.BadRequest("updates is empty")
	case n > api.MaxBulkUpdates:
		return httpx.Errorf(http.StatusRequestEntityTooLarge, "%d updates; at most %d in one bulk update", n, api.MaxBulkUpdates)
	}
	ops := make([]store.UpdateOp, len(req.Updates))
	var bad []error
	for i, b := range req.Updates {
		if len(bad) == 5 {
			bad = append(bad, errors.New("..."))
			break
		}
		f, err := compileFilter(b.Query, "query")
		if err != nil {
			bad = append(bad, fmt.Errorf("update %d: %w", i, err))
			continue
		}
		if b.Data == nil {
			bad = append(bad, fmt.Errorf("update %d: data (the update document) is required", i))
			continue
		}
		u, err := query.CompileUpdate(b.Data, false, false)
		if err != nil {
			bad = append(bad, fmt.Errorf("update %d: data: %w", i, err))
			continue
		}
		ops[i] = store.UpdateOp{Filter: f, Update: u, Many: b.IsMany, Upsert: b.Upsert}
	}
	if len(bad) > 0 {
		return httpx.BadRequest("nothing written: %v", errors.Join(bad...))
	}
	res, err := s.st.UpdateBatch(r.Context(), db, coll, ops)
	if err != nil {
		return err
	}
	out := api.BulkUpdateResponse{Acknowledged: true, UpsertedIDs: make([]any, len(res))}
	for i, x := range res {
		out.MatchedCount += x.Matched
		out.ModifiedCount += x.Modified
		if x.UpsertedID != nil {
			out.UpsertedCount++
		}
		out.UpsertedIDs[i] = x.UpsertedID
	}
	return httpx.WriteJSON(w, http.StatusOK, out)
}
func (s *Server) replaceOne(w http.ResponseWriter, r *http.Request) error {
	return s.doUpdate(w, r, true)
}

func (s *Server) updateDeprecated(w http.ResponseWriter, r *http.Request) error {
	var req api.UpdateDeprecatedRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	f, err := compileFilter(req.Spec, "spec")
	if err != nil {
		return err
	}
	f, check, err := writeScope(r, f)
	if err != nil {
		return err
	}
	if req.Document == nil {
		return httpx.BadRequest("document is required")
	}
	u, err := query.CompileUpdate(req.Document, false, true)
	if err != nil {
		return httpx.BadRequest("document: %v", err)
	}
	if req.Multi && u.IsReplacement() {
		return httpx.BadRequest("multi updates need operators such as $set, not a replacement document")
	}
	res, err := s.st.UpdateChecked(r.Context(), db, coll, f, u, req.Multi, req.Upsert, check)
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, api.DeprecatedResponse{Resp: rawUpdate(res)})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) error {
	var req api.DeleteRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	db, coll, err := target(req.StageName, req.Database, req.Collection, req.Indices)
	if err != nil {
		return err
	}
	f, err := compileFilter(req.Query, "query")
	if err != nil {
		return err
	}
	if f, _, err = writeScope(r, f); err != nil {
		return err
	}
	n, err := s.st.Delete(r.Context(), db, coll, f, req.IsMany)
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, api.DeleteResponse{
		Acknowledged: true, DeletedCount: n, RawResult: map[string]any{"n": n, "ok": 1.0},
	})
}

func (s *Server) spend(w http.ResponseWriter, r *http.Request) error {
	// api.SpendRequest's fields, with the cost required.
	var req struct {
		PrivacyCost  *api.Cost `json:"privacy_cost"`
		QueryID      string    `json:"query_id"`
		Service      string    `json:"service"`
		Question     string    `json:"question"`
		Participants int       `json:"participants"`
	}
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{MaxBody: 64 << 10}); err != nil {
		return err
	}
	if req.PrivacyCost == nil {
		return httpx.BadRequest("privacy_cost is required")
	}
	c := store.Charge{Cost: float64(*req.PrivacyCost), QueryID: req.QueryID, Service: req.Service,
		Question: req.Question, Participants: req.Participants}
	g := callerOf(r).g
	if g == nil {
		res, err := s.st.Spend(c)
		if err != nil {
			return err
		}
		s.metrics.spend(payerOwner, spendOutcome(res), c.Cost)
		s.log.Info("privacy budget", "success", res.Success, "replayed", res.Replayed, "caller", req.Service)
		return httpx.WriteJSON(w, http.StatusOK, res)
	}
	// A grant pays: the ledger names it and its service, and it may charge
	// at most its cap in all. Over the cap, nothing is charged and the
	// answer is 403; a retry of a charge already made (same query id and
	// question) still gets its first answer.
	c.Grant, c.GrantCap, c.Service = g.ID, g.Spend, g.Service
	s.spendMu.Lock()
	defer s.spendMu.Unlock()
	spent, err := s.st.GrantSpent(g.ID)
	if err != nil {
		return err
	}
	if spent+c.Cost > g.Spend+grantSlack {
		replay, err := s.st.Paid(c.QueryID, c.Question, c.Cost)
		if err != nil {
			return err
		}
		if !replay {
			s.metrics.spend(payerGrant, spendRefusedGrantCap, 0)
			return deny(http.StatusForbidden, "grant %s may spend %g ε in all; %g spent, %g asked", g.ID, g.Spend, spent, c.Cost)
		}
	}
	res, err := s.st.Spend(c)
	if err != nil {
		return err
	}
	s.metrics.spend(payerGrant, spendOutcome(res), c.Cost)
	s.log.Info("privacy budget", "success", res.Success, "replayed", res.Replayed, "caller", g.Service, "grant", g.ID)
	return httpx.WriteJSON(w, http.StatusOK, res)
}

// spendOutcome is the metrics' outcome of the store's answer to a spend.
func spendOutcome(res api.SpendResponse) string {
	switch {
	case res.Replayed:
		return spendReplayed
	case res.Success:
		return spendCharged
	}
	return spendRefusedBudget
}

// grantSlack absorbs floating-point error in a grant's cap, as the store's
// own slack does for the balance.
const grantSlack = 1e-9

func (s *Server) ledger(w http.ResponseWriter, r *http.Request) error {
	l, err := s.st.Ledger()
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, l)
}
