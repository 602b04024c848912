// Package pmstore is the pipeline's Store over a user's permission manager
// (through pmclient): raw phone entries in Stage_timeseries, the pipeline's
// results in Stage_analysis_timeseries (where the metrics and count services
// read them), phone pushes in Stage_usercache and stage progress in
// Stage_pipeline_state, as e-mission lays them out.
package pmstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// PipelineState is e-mission's collection of per-stage progress.
const PipelineState = "Stage_pipeline_state"

// Store implements pipeline.Store for one user of one PM.
type Store struct {
	C        *pmclient.Client
	Database string // api.DefaultDatabase when empty
	UserID   string
}

var _ pipeline.Store = (*Store)(nil)

// New returns the store of user in the PM that c talks to.
func New(c *pmclient.Client, user string) *Store {
	return &Store{C: c, Database: api.DefaultDatabase, UserID: user}
}

func (s *Store) db() string {
	if s.Database == "" {
		return api.DefaultDatabase
	}
	return s.Database
}

// isAnalysis says whether key is a pipeline result (e-mission keeps those in
// the analysis timeseries).
func isAnalysis(key string) bool {
	for _, p := range []string{"segmentation/", "analysis/", "inference/"} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// collections maps a pipeline collection and keys to PM collections.
func collections(coll string, keys []string) map[string][]string {
	if coll == pipeline.Usercache {
		return map[string][]string{api.Usercache: keys}
	}
	if len(keys) == 0 {
		return map[string][]string{api.Timeseries: nil, api.AnalysisTimeseries: nil}
	}
	out := map[string][]string{}
	for _, k := range keys {
		c := api.Timeseries
		if isAnalysis(k) {
			c = api.AnalysisTimeseries
		}
		out[c] = append(out[c], k)
	}
	return out
}

type wireEntry struct {
	ID       string            `json:"_id"`
	UserID   any               `json:"user_id"`
	Metadata pipeline.Metadata `json:"metadata"`
	Data     json.RawMessage   `json:"data"`
	Invalid  bool              `json:"invalid,omitempty"`
}

type times struct {
	TS      *float64 `json:"ts"`
	StartTS *float64 `json:"start_ts"`
	EndTS   *float64 `json:"end_ts"`
	EnterTS *float64 `json:"enter_ts"`
}

func fieldValue(e wireEntry, field string) float64 {
	if field == pipeline.FieldWriteTS {
		return e.Metadata.WriteTS
	}
	var t times
	_ = json.Unmarshal(e.Data, &t)
	var p *float64
	switch field {
	case pipeline.FieldTS:
		p = t.TS
	case "data.start_ts":
		p = t.StartTS
	case "data.end_ts":
		p = t.EndTS
	case "data.enter_ts":
		p = t.EnterTS
	}
	if p == nil {
		return 0
	}
	return *p
}

// Find implements pipeline.Store.
func (s *Store) Find(ctx context.Context, q pipeline.Query) ([]pipeline.Entry, error) {
	field := q.Field
	if field == "" {
		field = pipeline.FieldTS
	}
	type hit struct {
		v float64
		e wireEntry
	}
	var hits []hit
	colls := collections(q.Collection, q.Keys)
	names := make([]string, 0, len(colls))
	for c := range colls {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		filter := map[string]any{"invalid": map[string]any{"$exists": false}}
		if keys := colls[c]; len(keys) > 0 {
			filter["metadata.key"] = map[string]any{"$in": keys}
		}
		if q.Start != nil || q.End != nil {
			r := map[string]any{}
			if q.Start != nil {
				r["$gte"] = *q.Start
			}
			if q.End != nil {
				r["$lte"] = *q.End
			}
			filter[field] = r
		}
		var got []wireEntry
		err := s.C.FindInto(ctx, pmclient.FindRequest{Database: s.db(), Collection: c, Filter: filter,
			Sort: []api.SortField{api.Asc(field), api.Asc("_id")}}, &got)
		if err != nil {
			return nil, fmt.Errorf("find %v in %s: %w", q.Keys, c, err)
		}
		for _, e := range got {
			hits = append(hits, hit{fieldValue(e, field), e})
		}
	}
	if len(names) > 1 {
		sort.SliceStable(hits, func(i, j int) bool { return hits[i].v < hits[j].v })
	}
	out := make([]pipeline.Entry, len(hits))
	for i, h := range hits {
		uid, _ := h.e.UserID.(string)
		out[i] = pipeline.Entry{ID: h.e.ID, UserID: uid, Metadata: h.e.Metadata, Data: h.e.Data, Invalid: h.e.Invalid}
	}
	return out, nil
}

func toDoc(e pipeline.Entry) (map[string]any, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", e.Metadata.Key, e.ID, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if e.ID == "" {
		delete(m, "_id")
	}
	return m, nil
}

func (s *Store) collectionOf(coll, key string) string {
	for c := range collections(coll, []string{key}) {
		return c
	}
	return api.Timeseries
}

// newEntry is an Entry as it is written: without _id when it has none, so
// the PM gives it one.
type newEntry struct {
	ID       string            `json:"_id,omitempty"`
	UserID   string            `json:"user_id"`
	Metadata pipeline.Metadata `json:"metadata"`
	Data     any               `json:"data"`
	Invalid  bool              `json:"invalid,omitempty"`
}

// Insert implements pipeline.Store; each PM collection gets one batch of
// encoded entries (the PM stores them without decoding).
func (s *Store) Insert(ctx context.Context, coll string, entries []pipeline.Entry) error {
	batches := map[string][]json.RawMessage{}
	for _, e := range entries {
		d, err := json.Marshal(newEntry(e))
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", e.Metadata.Key, e.ID, err)
		}
		c := s.collectionOf(coll, e.Metadata.Key)
		batches[c] = append(batches[c], d)
	}
	names := make([]string, 0, len(batches))
	for c := range batches {
		names = append(names, c)
	}
	slices.Sort(names)
	for _, c := range names {
		docs := batches[c]
		for len(docs) > 0 {
			n := min(len(docs), 1000)
			if _, err := s.C.InsertJSON(ctx, s.db(), c, docs[:n]); err != nil {
				return fmt.Errorf("insert into %s: %w", c, err)
			}
			docs = docs[n:]
		}
	}
	return nil
}

// Update implements pipeline.Store.
func (s *Store) Update(ctx context.Context, coll string, e pipeline.Entry) error {
	d, err := toDoc(e)
	if err != nil {
		return err
	}
	delete(d, "_id")
	res, err := s.C.ReplaceOne(ctx, pmclient.UpdateRequest{Database: s.db(), Collection: s.collectionOf(coll, e.Metadata.Key),
		Query: map[string]any{"_id": e.ID}, Data: d})
	if err != nil {
		return fmt.Errorf("update %s: %w", e.ID, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("update %s: %w", e.ID, pipeline.ErrNotFound)
	}
	return nil
}

// Delete implements pipeline.Store.
func (s *Store) Delete(ctx context.Context, coll string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	for c := range collections(coll, nil) {
		if _, err := s.C.Delete(ctx, pmclient.DeleteRequest{Database: s.db(), Collection: c,
			Query: map[string]any{"_id": map[string]any{"$in": ids}}, IsMany: true}); err != nil {
			return fmt.Errorf("delete from %s: %w", c, err)
		}
	}
	return nil
}

// State implements pipeline.Store.
func (s *Store) State(ctx context.Context, stage string) (pipeline.State, error) {
	var got []pipeline.State
	err := s.C.FindInto(ctx, pmclient.FindRequest{Database: s.db(), Collection: PipelineState,
		Filter: map[string]any{"user_id": s.UserID, "pipeline_stage": stage}}, &got)
	if err != nil {
		return pipeline.State{}, fmt.Errorf("read state of %s: %w", stage, err)
	}
	if len(got) == 0 {
		return pipeline.State{Stage: stage}, nil
	}
	return got[0], nil
}

// SetState implements pipeline.Store.
func (s *Store) SetState(ctx context.Context, st pipeline.State) error {
	set := map[string]any{"user_id": s.UserID, "pipeline_stage": st.Stage, "last_ts_run": st.LastTSRun}
	if st.LastProcessedTS != nil {
		set["last_processed_ts"] = *st.LastProcessedTS
	}
	_, err := s.C.Update(ctx, pmclient.UpdateRequest{Database: s.db(), Collection: PipelineState,
		Query: map[string]any{"user_id": s.UserID, "pipeline_stage": st.Stage}, Data: map[string]any{"$set": set}, Upsert: true})
	if err != nil {
		return fmt.Errorf("save state of %s: %w", st.Stage, err)
	}
	return nil
}
