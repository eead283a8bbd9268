package store_test

import (
	"testing"

	"github.com/labctl/labctl/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
