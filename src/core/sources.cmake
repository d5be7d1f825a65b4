# The sources of the job-file front end (no libtorch, no spdlog), shared with tests/fuzz.
set(N3RLHF_CORE_PARSER_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/error.cpp
  ${CMAKE_CURRENT_LIST_DIR}/error_catalog.cpp
  ${CMAKE_CURRENT_LIST_DIR}/diagnostic.cpp
  ${CMAKE_CURRENT_LIST_DIR}/input_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/suggest.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dsl_lexer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dsl_parser.cpp
  ${CMAKE_CURRENT_LIST_DIR}/config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/config_schema.cpp
  ${CMAKE_CURRENT_LIST_DIR}/config_builder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/config_validation.cpp
  ${CMAKE_CURRENT_LIST_DIR}/data_source_resolver.cpp
  ${CMAKE_CURRENT_LIST_DIR}/reward_rules.cpp
)
