// openapi.cpp: the OpenAPI 3 document of the service (served at /openapi.json). A test checks
// each route against it, and schemathesis fuzzes the running service from it.
#include <nlohmann/json.hpp>

#include "service/server.hpp"

namespace n3rlhf::service {

namespace {

using json = nlohmann::json;

json ref(const std::string& name) { return {{"$ref", "#/components/schemas/" + name}}; }

json error_response(const std::string& description) {
  return {{"description", description}, {"content", {{"application/json", {{"schema", ref("Error")}}}}}};
}

json json_response(const std::string& description, const json& schema) {
  return {{"description", description}, {"content", {{"application/json", {{"schema", schema}}}}}};
}

// The refusals every authenticated route can answer.
json with_errors(json responses, std::initializer_list<int> extra) {
  responses["401"] = error_response("No or unknown bearer token");
  responses["403"] = error_response("The token lacks the route's role");
  responses["429"] = error_response("The token's rate limit was reached");
  responses["503"] = error_response("The store is unavailable");
  responses["414"] = error_response("The request line is longer than the HTTP layer accepts");
  for (const int status : extra) {
    const char* text = status == 400   ? "Invalid request (the reason names the field; a POST without Content-Length)"
                       : status == 404 ? "No such job"
                       : status == 409 ? "The job is not running"
                       : status == 413 ? "Body or field over the service's limits"
                       : status == 415 ? "The body is not application/json"
                                       : "Refused";
    responses[std::to_string(status)] = error_response(text);
  }
  return responses;
}

json id_parameter() {
  return {{"name", "id"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "integer"}, {"minimum", 1}}}};
}

json json_body(const std::string& schema) {
  return {{"required", true}, {"content", {{"application/json", {{"schema", ref(schema)}}}}}};
}

}  // namespace

json openapi_document() {
  const json text_field = {{"type", "string"}, {"minLength", 1}, {"maxLength", 65536}};
  const json id_field = {{"type", "string"}, {"minLength", 1}, {"maxLength", 256}, {"pattern", "^[^\\u0000-\\u001f\\u007f]+$"}};
  const json nullable_string = {{"type", "string"}, {"nullable", true}};
  json schemas;
  schemas["Error"] = {
      {"type", "object"},
      {"required", {"error"}},
      {"properties",
       {{"error",
         {{"type", "object"},
          {"required", {"status", "reason"}},
          {"properties",
           {{"status", {{"type", "integer"}}},
            {"reason", {{"type", "string"}}},
            {"field", {{"type", "string"}}},
            {"code", {{"type", "string"}, {"pattern", "^RLHF[0-9]{3}$"}}},
            {"diagnostics",
             {{"type", "array"},
              {"items",
               {{"type", "object"},
                {"required", {"code", "message"}},
                {"properties",
                 {{"code", {{"type", "string"}}},
                  {"message", {{"type", "string"}}},
                  {"line", {{"type", "integer"}}},
                  {"column", {{"type", "integer"}}},
                  {"hint", {{"type", "string"}}},
                  {"text", {{"type", "string"}}}}}}}}}}}}}}}};
  schemas["Feedback"] = {
      {"type", "object"},
      {"additionalProperties", false},
      {"required", {"agent_id", "prompt", "response_chosen", "response_rejected"}},
      {"properties",
       {{"agent_id", id_field},
        {"prompt", text_field},
        {"response_chosen", text_field},
        {"response_rejected", text_field},
        {"score", {{"type", "number"}, {"nullable", true}}},
        {"annotator_id", {{"type", "string"}, {"maxLength", 256}, {"pattern", "^[^\\u0000-\\u001f\\u007f]*$"}, {"nullable", true}}},
        {"metadata", {{"type", "object"}, {"nullable", true}, {"maxProperties", 64}}}}}};
  schemas["FeedbackBatch"] = {{"type", "object"},
                              {"additionalProperties", false},
                              {"required", {"items"}},
                              {"properties", {{"items", {{"type", "array"}, {"minItems", 1}, {"maxItems", 1000}, {"items", ref("Feedback")}}}}}};
  schemas["JobSubmission"] = {
      {"type", "object"},
      {"additionalProperties", false},
      {"description",
       "Either job_text (an N3 file with one `train rlhf` block) or the seed's fields job_name, algorithm, "
       "base_model, dataset_path and config (nested objects become blocks)."},
      {"properties",
       {{"job_text", {{"type", "string"}, {"maxLength", 262144}}},
        {"job_name", {{"type", "string"}, {"maxLength", 256}}},
        {"algorithm", {{"type", "string"}}},
        {"base_model", {{"type", "string"}}},
        {"dataset_path", {{"type", "string"}}},
        {"config", {{"type", "object"}}},
        {"launcher", {{"type", "string"}, {"enum", {"local", "kubernetes"}}}},
        {"ranks", {{"type", "integer"}, {"minimum", 1}}},
        {"overrides", {{"type", "array"}, {"maxItems", 64}, {"items", {{"type", "string"}, {"pattern", "="}}}}}}}};
  schemas["Job"] = {
      {"type", "object"},
      {"required", {"id", "job_name", "algorithm", "status", "created_at", "outputs", "latest_metrics"}},
      {"properties",
       {{"id", {{"type", "integer"}}},
        {"job_name", {{"type", "string"}}},
        {"algorithm", {{"type", "string"}}},
        {"base_model", {{"type", "string"}}},
        {"dataset_path", {{"type", "string"}}},
        {"launcher", {{"type", "string"}, {"enum", {"local", "kubernetes"}}}},
        {"status",
         {{"type", "string"}, {"enum", {"queued", "running", "succeeded", "failed", "cancelled", "lost", "rendered"}}}},
        {"created_at", {{"type", "string"}}},
        {"started_at", nullable_string},
        {"finished_at", nullable_string},
        {"exit_code", {{"type", "integer"}, {"nullable", true}}},
        {"error", {{"type", "string"}}},
        {"pid", {{"type", "integer"}}},
        {"outputs", {{"type", "object"}, {"additionalProperties", {{"type", "string"}}}}},
        {"latest_metrics", {{"type", "object"}, {"nullable", true}}},
        {"config", {{"type", "object"}}},
        {"manifest", {{"type", "string"}}}}}};
  const json time_parameter_schema = {{"type", "string"}, {"description", "RFC 3339 date or date-time"}};

  json paths;
  paths["/api/rlhf/feedback"]["post"] = {
      {"summary", "Store one preference judgement"},
      {"operationId", "postFeedback"},
      {"security", {{{"bearer", json::array()}}}},
      {"requestBody", json_body("Feedback")},
      {"responses",
       with_errors({{"201", json_response("Stored", {{"type", "object"},
                                                     {"required", {"id"}},
                                                     {"properties", {{"id", {{"type", "integer"}}}}}})}},
                   {400, 413, 415})}};
  paths["/api/rlhf/feedback/batch"]["post"] = {
      {"summary", "Store several judgements in one transaction"},
      {"operationId", "postFeedbackBatch"},
      {"security", {{{"bearer", json::array()}}}},
      {"requestBody", json_body("FeedbackBatch")},
      {"responses",
       with_errors({{"201", json_response("Stored", {{"type", "object"},
                                                     {"required", {"ids", "count"}},
                                                     {"properties",
                                                      {{"ids", {{"type", "array"}, {"items", {{"type", "integer"}}}}},
                                                       {"count", {{"type", "integer"}}}}}})}},
                   {400, 413, 415})}};
  paths["/api/rlhf/feedback/export"]["get"] = {
      {"summary", "Export an agent's feedback as a preference data set (TRL columns prompt, chosen, rejected)"},
      {"operationId", "exportFeedback"},
      {"security", {{{"bearer", json::array()}}}},
      {"parameters",
       {{{"name", "agent_id"}, {"in", "query"}, {"required", true}, {"schema", {{"type", "string"}, {"minLength", 1}, {"maxLength", 256}}}},
        {{"name", "format"}, {"in", "query"}, {"required", false}, {"schema", {{"type", "string"}, {"enum", {"jsonl", "parquet"}}}}},
        {{"name", "since"}, {"in", "query"}, {"required", false}, {"schema", time_parameter_schema}},
        {{"name", "until"}, {"in", "query"}, {"required", false}, {"schema", time_parameter_schema}},
        {{"name", "limit"}, {"in", "query"}, {"required", false}, {"schema", {{"type", "integer"}, {"minimum", 0}}}}}},
      {"responses",
       with_errors({{"200",
                     {{"description", "The data set; X-Row-Count has the number of rows"},
                      {"content",
                       {{"application/x-ndjson", {{"schema", {{"type", "string"}}}}},
                        {"application/vnd.apache.parquet", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}}}},
                   {400})}};
  paths["/api/rlhf/feedback/stats"]["get"] = {
      {"summary", "Feedback rows per agent"},
      {"operationId", "feedbackStats"},
      {"security", {{{"bearer", json::array()}}}},
      {"responses",
       with_errors({{"200", json_response("Counts", {{"type", "object"},
                                                     {"required", {"agents", "total"}},
                                                     {"properties",
                                                      {{"total", {{"type", "integer"}}},
                                                       {"agents",
                                                        {{"type", "array"},
                                                         {"items",
                                                          {{"type", "object"},
                                                           {"properties",
                                                            {{"agent_id", {{"type", "string"}}},
                                                             {"count", {{"type", "integer"}}}}}}}}}}}})}},
                   {})}};
  paths["/api/rlhf/jobs"]["post"] = {
      {"summary", "Validate and start a training job (or render it as a Kubernetes MPIJob)"},
      {"operationId", "submitJob"},
      {"security", {{{"bearer", json::array()}}}},
      {"requestBody", json_body("JobSubmission")},
      {"responses", with_errors({{"201", json_response("Started or rendered", ref("Job"))}}, {400, 413, 415})}};
  paths["/api/rlhf/jobs"]["get"] = {
      {"summary", "Jobs, newest first"},
      {"operationId", "listJobs"},
      {"security", {{{"bearer", json::array()}}}},
      {"parameters",
       {{{"name", "limit"}, {"in", "query"}, {"required", false}, {"schema", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}}}}},
      {"responses",
       with_errors({{"200", json_response("Jobs", {{"type", "object"},
                                                   {"required", {"jobs"}},
                                                   {"properties", {{"jobs", {{"type", "array"}, {"items", ref("Job")}}}}}})}},
                   {400})}};
  paths["/api/rlhf/jobs/{id}"]["get"] = {
      {"summary", "A job's status, timestamps, latest metrics and output paths"},
      {"operationId", "getJob"},
      {"security", {{{"bearer", json::array()}}}},
      {"parameters", {id_parameter()}},
      {"responses", with_errors({{"200", json_response("The job", ref("Job"))}}, {404})}};
  paths["/api/rlhf/jobs/{id}/metrics"]["get"] = {
      {"summary", "A job's metric records (loss, reward, ...) per step"},
      {"operationId", "getJobMetrics"},
      {"security", {{{"bearer", json::array()}}}},
      {"parameters",
       {id_parameter(),
        {{"name", "max_points"}, {"in", "query"}, {"required", false}, {"schema", {{"type", "integer"}, {"minimum", 1}, {"maximum", 10000}}}}}},
      {"responses",
       with_errors({{"200", json_response("Metric records", {{"type", "object"},
                                                             {"required", {"id", "points"}},
                                                             {"properties",
                                                              {{"id", {{"type", "integer"}}},
                                                               {"points", {{"type", "array"}, {"items", {{"type", "object"}}}}}}}})}},
                   {400, 404})}};
  paths["/api/rlhf/jobs/{id}/cancel"]["post"] = {
      {"summary", "Cancel a running job (SIGTERM, then SIGKILL after the grace period)"},
      {"operationId", "cancelJob"},
      {"security", {{{"bearer", json::array()}}}},
      {"parameters", {id_parameter()}},
      {"responses", with_errors({{"202", json_response("Cancelling", ref("Job"))}}, {400, 404, 409})}};
  paths["/health"]["get"] = {
      {"summary", "Liveness and the store's state"},
      {"operationId", "health"},
      {"responses",
       {{"200", json_response("Up", {{"type", "object"},
                                     {"required", {"status", "store", "schema_version"}},
                                     {"properties",
                                      {{"status", {{"type", "string"}}},
                                       {"store", {{"type", "string"}}},
                                       {"schema_version", {{"type", "integer"}}}}}})},
        {"503", json_response("The store is down", {{"type", "object"}})}}}};
  paths["/metrics"]["get"] = {
      {"summary", "Prometheus metrics"},
      {"operationId", "metrics"},
      {"responses", {{"200", {{"description", "Prometheus text format"}, {"content", {{"text/plain", {{"schema", {{"type", "string"}}}}}}}}}}}};

  return {{"openapi", "3.0.3"},
          {"info",
           {{"title", "n3rlhf feedback and jobs service"},
            {"version", "1"},
            {"description", "Human feedback in, preference data sets out, training jobs started and watched."}}},
          {"paths", paths},
          {"components",
           {{"schemas", schemas},
            {"securitySchemes", {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}}}}}}};
}

}  // namespace n3rlhf::service
