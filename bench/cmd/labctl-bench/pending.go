package main

import (
	"context"
	"fmt"
	"io"

	"github.com/labctl/labctl/bench"
)

type pendingCase struct{ name string }

func (p pendingCase) Run(context.Context, *bench.Env, io.Writer, io.Writer) (bench.CaseResult, error) {
	return bench.CaseResult{}, fmt.Errorf("%w: %s not built yet", bench.ErrSkipped, p.name)
}

func scaleCase(runOptions) pendingCase { return pendingCase{"scale"} }
