-- post_feedback.lua: wrk script: POST one feedback row per request with the annotator token.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer annotator-token-0123456789"
wrk.body = '{"agent_id":"bench","prompt":"How do I reset my password?","response_chosen":"Open Settings, choose Security, then Reset password.","response_rejected":"No idea.","score":1.0,"annotator_id":"a1","metadata":{"source":"wrk"}}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
