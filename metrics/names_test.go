package metrics

import (
	"os"
	"regexp"
	"testing"
)

// Every knockgate_ series that the Grafana dashboard queries, or that the
// README names, is one this package exports: a renamed metric would
// otherwise leave a panel empty without any error.
func TestDocumentedMetricsExist(t *testing.T) {
	m := New("test", fakeSources())
	m.SetDoors([]string{"ssh"})
	m.SetCluster(fakeCluster)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if mf.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				have[mf.GetName()+s] = true
			}
		}
	}
	name := regexp.MustCompile(`knockgate_[a-z0-9_]*[a-z0-9]`)
	for _, file := range []string{"../contrib/grafana/knockgate.json", "../README.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := name.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Errorf("%s names no knockgate_ metric; has the pattern gone stale?", file)
		}
		for _, n := range names {
			if !have[n] {
				t.Errorf("%s uses %s, which knockgate does not export", file, n)
			}
		}
	}
}
