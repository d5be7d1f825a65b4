// feedback_source.hpp: feedback.export("agent", min_samples: N, since: "...", until: "...",
// store: "...") in a job: counts the agent's rows in the store (named by the call's `store:` or
// N3RLHF_FEEDBACK_STORE), refuses fewer than min_samples (RLHF023 with the count), and exports
// them as TRL-column JSONL that the data pipeline then reads.
#pragma once

#include <string>

#include "core/config.hpp"
#include "core/dsl_ast.hpp"
#include "service/store.hpp"

namespace n3rlhf::service {

struct FeedbackSourceCall {
  std::string agent_id;
  int64_t min_samples = 0;
  FeedbackQuery query;
  std::string store_url;  // from the call; empty: the environment's
};

// Reads the call's arguments; RLHF020 for a call other than feedback.export, RLHF003 for a
// wrong argument type or value, RLHF001 for an unknown argument.
FeedbackSourceCall parse_feedback_source_call(const DslValue& call);

// Where the export of `call` for a job goes: `directory` when given, else
// $N3RLHF_FEEDBACK_EXPORT_DIR, else <output.dir>/data; file feedback-<agent>.jsonl.
std::string feedback_export_path(const FeedbackSourceCall& call, const RLHFConfig& config,
                                 const std::string& directory = "");

// The resolver (core/data_source_resolver.hpp): every rank counts; the export is written only by
// the launcher's rank 0 (OMPI_COMM_WORLD_RANK / PMI_RANK unset or 0), which prepares the data.
// `default_store` is the store of a call without `store:` (before N3RLHF_FEEDBACK_STORE).
std::string resolve_feedback_source(const DslValue& call, const RLHFConfig& config,
                                    const std::string& directory = "", const std::string& default_store = "");

// Installs resolve_feedback_source as the process's data-source resolver. The export directory
// is the calling thread's ScopedExportDirectory when one is alive (the service puts each job's
// export in the job's own directory, from its own store), else the default above.
void install_feedback_source_resolver();

class ScopedExportDirectory {
 public:
  // `store_url`: the store of calls without `store:` on this thread (empty: the environment's).
  explicit ScopedExportDirectory(std::string directory, std::string store_url = "");
  ~ScopedExportDirectory();
  ScopedExportDirectory(const ScopedExportDirectory&) = delete;
  ScopedExportDirectory& operator=(const ScopedExportDirectory&) = delete;

 private:
  std::string previous_;
  std::string previous_store_;
};

}  // namespace n3rlhf::service
