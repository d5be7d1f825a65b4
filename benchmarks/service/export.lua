-- export.lua: wrk script: GET the JSONL export of the benchmark's agent with a token that may read.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer all-roles-token-0123456789"
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
