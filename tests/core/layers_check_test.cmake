# layers_check_test.cmake: the layer check of cmake/N3rlhfLayers.cmake, run as a script against
# the real picture in docs/architecture.md: a link downwards passes, links upwards and a library
# missing from the picture are reported. Run: cmake -DSOURCE_DIR=... -P layers_check_test.cmake
include("${SOURCE_DIR}/cmake/N3rlhfLayers.cmake")
n3rlhf_read_layers("${SOURCE_DIR}/docs/architecture.md" names layers)

n3rlhf_layer_violations("${names}" "${layers}" "n3rlhf_runtime>n3rlhf_core;n3rlhf_algos>n3rlhf_model;n3rlhf_shard>n3rlhf_optim" none)
if(none)
  message(FATAL_ERROR "downward links were reported: ${none}")
endif()

n3rlhf_layer_violations("${names}" "${layers}" "n3rlhf_core>n3rlhf_runtime;n3rlhf_shard>n3rlhf_algos;n3rlhf_model>n3rlhf_algos" up)
list(LENGTH up count)
if(NOT count EQUAL 3)
  message(FATAL_ERROR "expected 3 upward links reported, got ${count}: ${up}")
endif()
list(GET up 0 first)
if(NOT first MATCHES "n3rlhf_core \\(layer 0\\) links n3rlhf_runtime")
  message(FATAL_ERROR "unexpected message: ${first}")
endif()

n3rlhf_layer_violations("${names}" "${layers}" "n3rlhf_unpictured>n3rlhf_core" missing)
if(NOT missing MATCHES "n3rlhf_unpictured is not in the layer picture")
  message(FATAL_ERROR "a library outside the picture was not reported: ${missing}")
endif()
message(STATUS "layer check: downward links pass, upward links and unpictured libraries are reported")
