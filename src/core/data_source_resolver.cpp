// data_source_resolver.cpp: the process-wide data-source resolver slot.
#include "core/data_source_resolver.hpp"

namespace n3rlhf {

namespace {
DataSourceResolver& slot() {
  static DataSourceResolver resolver;
  return resolver;
}
}  // namespace

void set_data_source_resolver(DataSourceResolver resolver) { slot() = std::move(resolver); }

const DataSourceResolver& data_source_resolver() { return slot(); }

}  // namespace n3rlhf
