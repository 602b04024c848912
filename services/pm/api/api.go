// Package api holds the permission manager's wire types, shared by the server
// (services/pm) and the typed client (services/pm/pmclient).
//
// The shapes mirror e-mission-upc-aggregator's shared_apis/fake_mongo_types.py
// so the original Python client library works unchanged: every request names
// its collection either as the first generation's "stage_name" (database
// "Stage_database") or as the later "database" + "collection"; filters travel
// as "filter" (find, count, distinct) or "query" (update, replace, delete);
// documents as "data"; ObjectIds as their 24-hex strings, both ways. The many
// pymongo cursor options the library sends (no_cursor_timeout, hint, ...) are
// accepted and ignored.
package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// Endpoint paths, as the original PM serves them (all POST but Healthz and
// BudgetLedger).
const (
	PathKey              = "/cloud/key"
	PathInsert           = "/data/insert"
	PathInsertDeprecated = "/data/insert-deprecated"
	PathFind             = "/data/find"
	PathFindOne          = "/data/find_one"
	PathUpdate           = "/data/update"
	PathUpdateDeprecated = "/data/update-deprecated"
	PathReplaceOne       = "/data/replace_one"
	PathDelete           = "/data/delete"
	PathCount            = "/data/count"
	PathDistinct         = "/data/distinct"
	PathBudget           = "/privacy_budget" // POST: spend (original)
	PathBudgetLedger     = "/privacy_budget" // GET: balance and ledger
	PathHealthz          = "/healthz"
	PathStatus           = "/status" // GET: sealed or not, no secrets
	// PathCollections lists the collections that hold documents, with how
	// many (owner only): what an export reads.
	PathCollections = "/v1/collections"
	// PathBulkUpdate applies many updates to one collection as one
	// transaction (owner only): what a client's upload sends.
	PathBulkUpdate = "/v1/bulk_update"
)

// MaxBulkUpdates is the most updates one bulk update may carry.
const MaxBulkUpdates = 10000

// DefaultDatabase is the database a "stage_name"-only request addresses, as
// the first-generation PM's MongoClient(...).Stage_database did.
const DefaultDatabase = "Stage_database"

// e-mission's collections.
const (
	Timeseries         = "Stage_timeseries"
	AnalysisTimeseries = "Stage_analysis_timeseries"
	Usercache          = "Stage_usercache"
)

// KeyRequest unseals the PM. The server also accepts a bare JSON string or
// integer body, which older client versions sent.
type KeyRequest struct {
	Key string `json:"key"`
	// KeyKind is "passphrase" (the default: stretched with Argon2id) or
	// "random" (256 bits or more from a CSPRNG as 64+ hex digits: derived
	// with HKDF, no stretching needed). It matters when the volume is new.
	KeyKind string `json:"key_kind,omitempty"`
}

// Ignored holds the pymongo cursor options that the Python library sends with
// every read. They are declared so strict decoding accepts them; the PM gives
// them no meaning.
type Ignored struct {
	NoCursorTimeout     any `json:"no_cursor_timeout,omitempty"`
	CursorType          any `json:"cursor_type,omitempty"`
	AllowPartialResults any `json:"allow_partial_results,omitempty"`
	OplogReplay         any `json:"oplog_replay,omitempty"`
	Modifiers           any `json:"modifiers,omitempty"`
	BatchSize           any `json:"batch_size,omitempty"`
	Manipulate          any `json:"manipulate,omitempty"`
	Collation           any `json:"collation,omitempty"`
	Hint                any `json:"hint,omitempty"`
	MaxScan             any `json:"max_scan,omitempty"`
	MaxTimeMS           any `json:"max_time_ms,omitempty"`
	Max                 any `json:"max,omitempty"`
	Min                 any `json:"min,omitempty"`
	ReturnKey           any `json:"return_key,omitempty"`
	ShowRecordID        any `json:"show_record_id,omitempty"`
	Snapshot            any `json:"snapshot,omitempty"`
	Comment             any `json:"comment,omitempty"`
	BypassValidation    any `json:"bypass_document_validation,omitempty"`
	Ordered             any `json:"ordered,omitempty"`
	CheckKeys           any `json:"check_keys,omitempty"`
	ContinueOnError     any `json:"continue_on_error,omitempty"`
	W                   any `json:"w,omitempty"`
	WTimeout            any `json:"wtimeout,omitempty"`
	J                   any `json:"j,omitempty"`
	FSync               any `json:"fsync,omitempty"`
}

// Indices is what the library sends as "indices": index name (dotted paths
// joined by "\n") → [[direction or type per path], sparse]. The PM validates
// its shape; its own indexes (metadata.key, data.ts, metadata.write_ts, _id)
// are fixed.
type Indices map[string]any

// FindRequest is the body of /data/find, /data/find_one, /data/count and
// /data/distinct.
type FindRequest struct {
	StageName  string         `json:"stage_name,omitempty"`
	Database   string         `json:"database,omitempty"`
	Collection string         `json:"collection,omitempty"`
	Indices    Indices        `json:"indices,omitempty"`
	Filter     map[string]any `json:"filter"`
	// Projection is nil, {"field": 0|1|bool, ...} or a list of field names.
	Projection any         `json:"projection,omitempty"`
	Sort       []SortField `json:"sort,omitempty"`
	Skip       int64       `json:"skip,omitempty"`
	Limit      int64       `json:"limit,omitempty"`
	// WithLimitAndSkip is /data/count's: apply Skip and Limit to the count.
	WithLimitAndSkip bool `json:"with_limit_and_skip,omitempty"`
	// DistinctKey is /data/distinct's dotted path.
	DistinctKey string `json:"distinct_key,omitempty"`
	Ignored
}

// SortField is one sort key, sent as the pair ["field", 1|-1] that pymongo's
// sort list becomes in JSON.
type SortField struct {
	Field string
	Dir   int // 1 ascending, -1 descending
}

// Asc and Desc build sort keys.
func Asc(field string) SortField  { return SortField{Field: field, Dir: 1} }
func Desc(field string) SortField { return SortField{Field: field, Dir: -1} }

func (s SortField) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]any{s.Field, s.Dir})
}

func (s *SortField) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil || len(pair) != 2 {
		return fmt.Errorf("a sort key must be a [field, direction] pair, not %s", b)
	}
	if err := json.Unmarshal(pair[0], &s.Field); err != nil || s.Field == "" {
		return fmt.Errorf("a sort key's field must be a non-empty string, not %s", pair[0])
	}
	f, err := strconv.ParseFloat(string(pair[1]), 64)
	if err != nil || (f != 1 && f != -1) {
		return fmt.Errorf("sort direction of %q must be 1 or -1, not %s", s.Field, pair[1])
	}
	s.Dir = int(f)
	return nil
}

// InsertRequest is the body of /data/insert: Data is one document
// (IsMany false) or a list of them.
type InsertRequest struct {
	StageName  string  `json:"stage_name,omitempty"`
	Database   string  `json:"database,omitempty"`
	Collection string  `json:"collection,omitempty"`
	Indices    Indices `json:"indices,omitempty"`
	Data       any     `json:"data"`
	IsMany     bool    `json:"is_many"`
	Ignored
}

// InsertResponse answers /data/insert: InsertedID for one, InsertedIDs for many.
type InsertResponse struct {
	Acknowledged bool  `json:"acknowledged"`
	InsertedID   any   `json:"inserted_id,omitempty"`  // a 24-hex string for generated ids
	InsertedIDs  []any `json:"inserted_ids,omitempty"` // idem
}

// InsertDeprecatedRequest is the body of /data/insert-deprecated (pymongo's
// Collection.insert).
type InsertDeprecatedRequest struct {
	StageName  string  `json:"stage_name,omitempty"`
	Database   string  `json:"database,omitempty"`
	Collection string  `json:"collection,omitempty"`
	Indices    Indices `json:"indices,omitempty"`
	DocOrDocs  any     `json:"doc_or_docs"`
	Ignored
}

// DeprecatedResponse answers the two -deprecated endpoints: the inserted
// id(s), or the legacy update's raw result.
type DeprecatedResponse struct {
	Resp any `json:"resp"`
}

// UpdateRequest is the body of /data/update and /data/replace_one. Query is
// the filter; Data the update ({"$set": ...}) or, for replace_one, the new
// document.
type UpdateRequest struct {
	StageName  string         `json:"stage_name,omitempty"`
	Database   string         `json:"database,omitempty"`
	Collection string         `json:"collection,omitempty"`
	Indices    Indices        `json:"indices,omitempty"`
	Query      map[string]any `json:"query"`
	Data       map[string]any `json:"data"`
	IsMany     bool           `json:"is_many,omitempty"`
	Upsert     bool           `json:"upsert,omitempty"`
	Ignored
}

// BulkUpdateRequest is the body of /v1/bulk_update: the collection, named as
// for /data/update, and the updates, applied in order (each sees the ones
// before it), all or nothing.
type BulkUpdateRequest struct {
	StageName  string       `json:"stage_name,omitempty"`
	Database   string       `json:"database,omitempty"`
	Collection string       `json:"collection,omitempty"`
	Indices    Indices      `json:"indices,omitempty"`
	Updates    []BulkUpdate `json:"updates"`
}

// BulkUpdate is one update of a bulk update, as /data/update's fields.
type BulkUpdate struct {
	Query  map[string]any `json:"query"`
	Data   map[string]any `json:"data"`
	IsMany bool           `json:"is_many,omitempty"`
	Upsert bool           `json:"upsert,omitempty"`
}

// BulkUpdateResponse answers /v1/bulk_update: the totals, and each
// update's upserted _id (null when it matched) in order.
type BulkUpdateResponse struct {
	Acknowledged  bool  `json:"acknowledged"`
	MatchedCount  int64 `json:"matched_count"`
	ModifiedCount int64 `json:"modified_count"`
	UpsertedCount int64 `json:"upserted_count"`
	UpsertedIDs   []any `json:"upserted_ids"`
}

// UpdateResponse answers /data/update and /data/replace_one. UpsertedID is
// always present (null when nothing was upserted): the library reads it.
type UpdateResponse struct {
	Acknowledged  bool           `json:"acknowledged"`
	MatchedCount  int64          `json:"matched_count"`
	ModifiedCount int64          `json:"modified_count"`
	RawResult     map[string]any `json:"raw_result"`
	UpsertedID    any            `json:"upserted_id"`
}

// UpdateDeprecatedRequest is the body of /data/update-deprecated (pymongo's
// Collection.update): Spec is the filter, Document the update or replacement.
type UpdateDeprecatedRequest struct {
	StageName  string         `json:"stage_name,omitempty"`
	Database   string         `json:"database,omitempty"`
	Collection string         `json:"collection,omitempty"`
	Indices    Indices        `json:"indices,omitempty"`
	Spec       map[string]any `json:"spec"`
	Document   map[string]any `json:"document"`
	Upsert     bool           `json:"upsert,omitempty"`
	Multi      bool           `json:"multi,omitempty"`
	Ignored
}

// DeleteRequest is the body of /data/delete.
type DeleteRequest struct {
	StageName  string         `json:"stage_name,omitempty"`
	Database   string         `json:"database,omitempty"`
	Collection string         `json:"collection,omitempty"`
	Indices    Indices        `json:"indices,omitempty"`
	Query      map[string]any `json:"query"`
	IsMany     bool           `json:"is_many,omitempty"`
	Ignored
}

// DeleteResponse answers /data/delete.
type DeleteResponse struct {
	Acknowledged bool           `json:"acknowledged"`
	DeletedCount int64          `json:"deleted_count"`
	RawResult    map[string]any `json:"raw_result"`
}

// FindResponse answers /data/find.
type FindResponse struct {
	Data []map[string]any `json:"data"`
}

// FindOneResponse answers /data/find_one; Data is null when nothing matched.
type FindOneResponse struct {
	Data map[string]any `json:"data"`
}

// CountResponse answers /data/count.
type CountResponse struct {
	Count int64 `json:"count"`
}

// DistinctResponse answers /data/distinct.
type DistinctResponse struct {
	Distinct []any `json:"distinct"`
}

// Cost is a privacy cost: a JSON number, or a numeric string (the original
// PM did float(request.json['privacy_cost'])).
type Cost float64

func (c *Cost) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("privacy_cost must be a number, not %s", b)
	}
	*c = Cost(f)
	return nil
}

// SpendRequest is the body of POST /privacy_budget. QueryID and Service are
// this PM's additions: a retried request with the same QueryID is charged
// once, and both are written to the ledger.
type SpendRequest struct {
	PrivacyCost Cost   `json:"privacy_cost"`
	QueryID     string `json:"query_id,omitempty"`
	Service     string `json:"service,omitempty"`
	// Question is the hex SHA-256 of the exact question the charge pays for
	// (QuestionDigest); required with QueryID: an id buys one question.
	Question string `json:"question,omitempty"`
	// Participants is the population a noise share is claimed for; the
	// answer says how many the owner's policy lets it assume.
	Participants int `json:"participants,omitempty"`
}

// SpendResponse answers POST /privacy_budget. Success is the original field;
// Remaining and Replayed are additions.
type SpendResponse struct {
	Success   bool    `json:"success"`
	Remaining float64 `json:"remaining"`
	// Replayed says this QueryID was seen before and this answer repeats the
	// first one without charging again.
	Replayed bool `json:"replayed,omitempty"`
	// Participants is min(claimed, the owner's policy): the population the
	// noise share must be computed for.
	Participants int `json:"participants,omitempty"`
	// NoiseSeed (64 hex) keys the noise a service adds to this charge's
	// answer: the same on a replay, so retries repeat the noise instead of
	// averaging it away. Only the service that spent sees it.
	NoiseSeed string `json:"noise_seed,omitempty"`
}

// LedgerEntry is one budget event.
type LedgerEntry struct {
	Seq          uint64  `json:"seq"`
	Time         string  `json:"time"` // RFC 3339, UTC
	Kind         string  `json:"kind"` // "spend", "denied", "refund", "renew", "migrate"
	Service      string  `json:"service,omitempty"`
	QueryID      string  `json:"query_id,omitempty"`
	Question     string  `json:"question,omitempty"`
	Grant        string  `json:"grant,omitempty"`
	Participants int     `json:"participants,omitempty"`
	Seed         string  `json:"seed,omitempty"` // the noise seed of a spend
	Amount       float64 `json:"amount"`
	Balance      float64 `json:"balance"` // after the event
	Reason       string  `json:"reason,omitempty"`
	// Prev is the hash of the entry before (64 zero digits for the first):
	// the entries form a chain the PM checks on unseal.
	Prev string `json:"prev"`
}

// LedgerHead is the ledger chain's last entry: its number and hash. It only
// grows; an owner who remembers it detects a volume rolled back to an earlier
// copy (which is consistent with itself).
type LedgerHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// LedgerBase is what compaction folded away: the number of the last folded
// entry, how many there were, and the net ε they charged.
type LedgerBase struct {
	Seq     uint64  `json:"seq"`
	Entries uint64  `json:"entries"`
	Spent   float64 `json:"spent"`
}

// Ledger answers GET /privacy_budget: the owner's view of the budget.
type Ledger struct {
	Initial   float64       `json:"initial"`
	Remaining float64       `json:"remaining"`
	Spent     float64       `json:"spent"` // all time, compacted entries included
	Entries   []LedgerEntry `json:"entries"`
	Head      *LedgerHead   `json:"head,omitempty"`
	Compacted *LedgerBase   `json:"compacted,omitempty"`
}

// Status answers GET /status.
type Status struct {
	Sealed      bool `json:"sealed"`
	Initialized bool `json:"initialized"` // a key has been set on this volume
	// LedgerHead is the privacy ledger's head once unsealed, for the owner to
	// remember; LedgerError says why the ledger fails its check, if it does
	// (the PM then answers no spend).
	LedgerHead  *LedgerHead `json:"ledger_head,omitempty"`
	LedgerError string      `json:"ledger_error,omitempty"`
}

// Collection is one collection holding documents, and how many.
type Collection struct {
	Database   string `json:"database"`
	Collection string `json:"collection"`
	Count      int64  `json:"count"`
}

// Collections answers GET /v1/collections: every collection that holds
// documents, ordered by database and name.
type Collections struct {
	Collections []Collection `json:"collections"`
}

// QuestionDigest is the hex SHA-256 of a question: the service's name and its
// canonical form (a struct or map of everything that shapes the answer: the
// query, its bounds, ε, sensitivity, noise parameters). JSON encoding orders
// map keys, so equal questions give equal digests.
func QuestionDigest(service string, question any) (string, error) {
	b, err := json.Marshal(struct {
		Service  string `json:"service"`
		Question any    `json:"question"`
	}{service, question})
	if err != nil {
		return "", fmt.Errorf("question digest: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
