package pipeline

// Place is segmentation/raw_place and analysis/cleaned_place. The first place
// of a chain has no enter_*, the last none of exit_*.
type Place struct {
	EnterTS      *float64   `json:"enter_ts,omitempty"`
	EnterLocalDT *LocalDate `json:"enter_local_dt,omitempty"`
	EnterFmtTime string     `json:"enter_fmt_time,omitempty"`
	ExitTS       *float64   `json:"exit_ts,omitempty"`
	ExitLocalDT  *LocalDate `json:"exit_local_dt,omitempty"`
	ExitFmtTime  string     `json:"exit_fmt_time,omitempty"`
	Location     *Point     `json:"location,omitempty"`
	Duration     *float64   `json:"duration,omitempty"`
	StartingTrip string     `json:"starting_trip,omitempty"`
	EndingTrip   string     `json:"ending_trip,omitempty"`
	Source       string     `json:"source"`
	RawPlaces    []string   `json:"raw_places,omitempty"`
}

func (p *Place) timeFields() timeFields { return timeFields{enterTS: p.EnterTS} }

// Trip is segmentation/raw_trip, segmentation/raw_untracked,
// analysis/cleaned_trip and analysis/cleaned_untracked.
type Trip struct {
	StartTS      float64   `json:"start_ts"`
	StartLocalDT LocalDate `json:"start_local_dt"`
	StartFmtTime string    `json:"start_fmt_time"`
	StartLoc     Point     `json:"start_loc"`
	StartPlace   string    `json:"start_place"`
	EndTS        float64   `json:"end_ts"`
	EndLocalDT   LocalDate `json:"end_local_dt"`
	EndFmtTime   string    `json:"end_fmt_time"`
	EndLoc       Point     `json:"end_loc"`
	EndPlace     string    `json:"end_place"`
	Duration     float64   `json:"duration"`
	Distance     float64   `json:"distance"`
	Source       string    `json:"source"`
	RawTrip      string    `json:"raw_trip,omitempty"`
}

func (t *Trip) timeFields() timeFields { return timeFields{startTS: &t.StartTS, endTS: &t.EndTS} }

// Section is segmentation/raw_section and analysis/cleaned_section.
type Section struct {
	StartTS      float64   `json:"start_ts"`
	StartLocalDT LocalDate `json:"start_local_dt"`
	StartFmtTime string    `json:"start_fmt_time"`
	StartLoc     Point     `json:"start_loc"`
	EndTS        float64   `json:"end_ts"`
	EndLocalDT   LocalDate `json:"end_local_dt"`
	EndFmtTime   string    `json:"end_fmt_time"`
	EndLoc       Point     `json:"end_loc"`
	Duration     float64   `json:"duration"`
	SensedMode   int       `json:"sensed_mode"`
	TripID       string    `json:"trip_id"`
	StartStop    string    `json:"start_stop,omitempty"`
	EndStop      string    `json:"end_stop,omitempty"`
	Source       string    `json:"source"`
	// cleaned only
	Distance  float64   `json:"distance,omitempty"`
	Speeds    []float64 `json:"speeds,omitempty"`
	Distances []float64 `json:"distances,omitempty"`
}

func (s *Section) timeFields() timeFields { return timeFields{startTS: &s.StartTS, endTS: &s.EndTS} }

// Stop is segmentation/raw_stop and analysis/cleaned_stop.
type Stop struct {
	EnterTS         float64   `json:"enter_ts"`
	EnterLocalDT    LocalDate `json:"enter_local_dt"`
	EnterFmtTime    string    `json:"enter_fmt_time"`
	EnterLoc        Point     `json:"enter_loc"`
	ExitTS          float64   `json:"exit_ts"`
	ExitLocalDT     LocalDate `json:"exit_local_dt"`
	ExitFmtTime     string    `json:"exit_fmt_time"`
	ExitLoc         Point     `json:"exit_loc"`
	Duration        float64   `json:"duration"`
	Distance        float64   `json:"distance"`
	EndingSection   string    `json:"ending_section"`
	StartingSection string    `json:"starting_section"`
	TripID          string    `json:"trip_id"`
	Source          string    `json:"source"`
}

func (s *Stop) timeFields() timeFields { return timeFields{enterTS: &s.EnterTS} }

// Smoothing is analysis/smoothing: the points jump smoothing removed.
type Smoothing struct {
	Section       string   `json:"section"`
	DeletedPoints []string `json:"deleted_points"`
	OutlierAlgo   string   `json:"outlier_algo"`
	FilteringAlgo string   `json:"filtering_algo"`
}
