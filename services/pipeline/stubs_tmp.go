package pipeline

import "context"

func (r *Run) moveUsercache(ctx context.Context) error  { return nil }
func (r *Run) filterAccuracy(ctx context.Context) error { return nil }
