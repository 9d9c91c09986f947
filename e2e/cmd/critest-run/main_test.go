package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseReport(t *testing.T) {
	dir := t.TempDir()
	logPath, jsonPath := filepath.Join(dir, "critest.log"), filepath.Join(dir, "report.json")
	require.NoError(t, os.WriteFile(logPath, []byte("noise\nRan 3 of 5 Specs in 2.5 seconds\nFAIL! -- 1 Passed | 2 Failed | 0 Pending | 2 Skipped\n"), 0o644))
	require.NoError(t, os.WriteFile(jsonPath, []byte(`[{"SpecReports":[
		{"ContainerHierarchyTexts":["[k8s.io] A","b"],"LeafNodeType":"It","LeafNodeText":"c","State":"passed"},
		{"ContainerHierarchyTexts":["[k8s.io] A"],"LeafNodeType":"It","LeafNodeText":"d|e","State":"failed","Failure":{"Message":"boom\nmore"}},
		{"LeafNodeType":"BeforeSuite","State":"passed"}]}]`), 0o644))
	rep, err := parseReport(logPath, jsonPath)
	require.NoError(t, err)
	require.Equal(t, [6]int{1, 2, 0, 2, 3, 5}, [6]int{rep.passed, rep.failed, rep.pending, rep.skipped, rep.ran, rep.total})
	require.Equal(t, map[string]string{"[k8s.io] A b c": "passed", "[k8s.io] A d|e": "failed"}, rep.specs)
	require.Equal(t, "boom", rep.failures["[k8s.io] A d|e"])
}

func TestCompare(t *testing.T) {
	rep := &suiteReport{
		passed: 1, failed: 2, skipped: 1,
		specs: map[string]string{"ok": "passed", "known": "failed", "new": "timedout", "skip": "skipped"},
	}
	for _, tc := range []struct {
		desc     string
		expected map[string]expectation
		code     int
		output   string
	}{
		{desc: "all listed", expected: map[string]expectation{"known": {}, "new": {}}, code: 0},
		{desc: "unlisted failure", expected: map[string]expectation{"known": {}}, code: 1, output: "UNEXPECTED FAILURE: new"},
		{desc: "listed spec passes", expected: map[string]expectation{"known": {}, "new": {}, "ok": {line: 7}}, code: 1, output: "NOW PASSES (remove it from list, line 7): ok"},
		{desc: "stale entry", expected: map[string]expectation{"known": {}, "new": {}, "gone": {}}, code: 1, output: "NOT IN CRITEST"},
		{desc: "listed spec skipped", expected: map[string]expectation{"known": {}, "new": {}, "skip": {}}, code: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var out strings.Builder
			require.Equal(t, tc.code, compare(&out, rep, tc.expected, "list"))
			require.Contains(t, out.String(), "1 passed, 2 failed, 1 skipped\n")
			require.Contains(t, out.String(), tc.output)
		})
	}
}

func TestReadExpected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list")
	require.NoError(t, os.WriteFile(path, []byte("# comment\n\n[k8s.io] X a|b c | reason one\n"), 0o644))
	got, err := readExpected(path)
	require.NoError(t, err)
	require.Equal(t, map[string]expectation{"[k8s.io] X a|b c": {reason: "reason one", line: 3}}, got)

	require.NoError(t, os.WriteFile(path, []byte("spec without reason\n"), 0o644))
	_, err = readExpected(path)
	require.ErrorContains(t, err, ":1:")
}
