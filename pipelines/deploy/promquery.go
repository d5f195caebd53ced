package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/darktower/delivery/pipelines/cluster"
)

// Sample is one series of an instant query's vector result.
type Sample struct {
	Metric map[string]string
	Value  float64
	Time   time.Time
}

// promResponse is the Prometheus HTTP API's envelope (/api/v1/query).
type promResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"` // [unix seconds, "value"]
		} `json:"result"`
	} `json:"data"`
}

// PrometheusQuery runs an instant PromQL query against the Prometheus the
// deploy stage runs in MonitoringNamespace, through the API server's
// service proxy (no port-forward, no host port: the caller only needs the
// cluster's kubeconfig). The query must yield a vector.
func PrometheusQuery(ctx context.Context, c *cluster.Client, query string) ([]Sample, error) {
	return PrometheusQueryAt(ctx, c, MonitoringNamespace, "prometheus", "9090", query)
}

// PrometheusQueryAt is PrometheusQuery against the Prometheus behind
// Service namespace/service:port (a MetricTemplate's address, say).
func PrometheusQueryAt(ctx context.Context, c *cluster.Client, namespace, service, port, query string) ([]Sample, error) {
	body, err := c.Typed.CoreV1().Services(namespace).
		ProxyGet("http", service, port, "/api/v1/query", map[string]string{"query": query}).DoRaw(ctx)
	var r promResponse
	if jerr := json.Unmarshal(body, &r); jerr != nil || r.Status == "" {
		// Not Prometheus answering (the proxy's own error, no pod yet).
		if err == nil {
			err = fmt.Errorf("not a Prometheus API answer: %.200q", body)
		}
		return nil, fmt.Errorf("prometheus query %q: %w", query, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("prometheus query %q: %s: %s", query, r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus query %q: a %s result, not a vector", query, r.Data.ResultType)
	}
	out := make([]Sample, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		ts, ok1 := s.Value[0].(float64)
		vs, ok2 := s.Value[1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("prometheus query %q: malformed sample %v", query, s.Value)
		}
		v, err := strconv.ParseFloat(vs, 64) // also NaN, +Inf, -Inf as Prometheus writes them
		if err != nil {
			return nil, fmt.Errorf("prometheus query %q: sample value %q: %w", query, vs, err)
		}
		sec, frac := math.Modf(ts)
		out = append(out, Sample{Metric: s.Metric, Value: v, Time: time.Unix(int64(sec), int64(frac*1e9))})
	}
	return out, nil
}

// Series is one series of a range selector's raw samples.
type Series struct {
	Metric  map[string]string
	Samples []Sample
}

// PrometheusSamples returns the raw samples of selector over the last
// window (a range selector, evaluated now): what Prometheus scraped, at
// the times it scraped them.
func PrometheusSamples(ctx context.Context, c *cluster.Client, selector string, window time.Duration) ([]Series, error) {
	query := fmt.Sprintf("%s[%ds]", selector, int(math.Ceil(window.Seconds())))
	body, err := c.Typed.CoreV1().Services(MonitoringNamespace).
		ProxyGet("http", "prometheus", "9090", "/api/v1/query", map[string]string{"query": query}).DoRaw(ctx)
	var r struct {
		Status, ErrorType, Error string
		Data                     struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		}
	}
	if jerr := json.Unmarshal(body, &r); jerr != nil || r.Status == "" {
		if err == nil {
			err = fmt.Errorf("not a Prometheus API answer: %.200q", body)
		}
		return nil, fmt.Errorf("prometheus query %q: %w", query, err)
	}
	if r.Status != "success" || r.Data.ResultType != "matrix" {
		return nil, fmt.Errorf("prometheus query %q: %s %s: %s", query, r.Data.ResultType, r.ErrorType, r.Error)
	}
	out := make([]Series, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		series := Series{Metric: s.Metric}
		for _, v := range s.Values {
			ts, ok1 := v[0].(float64)
			vs, ok2 := v[1].(string)
			f, err := strconv.ParseFloat(vs, 64)
			if !ok1 || !ok2 || err != nil {
				return nil, fmt.Errorf("prometheus query %q: malformed sample %v", query, v)
			}
			sec, frac := math.Modf(ts)
			series.Samples = append(series.Samples, Sample{Value: f, Time: time.Unix(int64(sec), int64(frac*1e9))})
		}
		out = append(out, series)
	}
	return out, nil
}
