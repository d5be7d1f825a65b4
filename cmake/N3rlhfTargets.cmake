# N3rlhfTargets.cmake: the helpers every CMakeLists uses: n3rlhf_add_library() for a module,
# n3rlhf_use_torch() for targets that include libtorch (with the shared precompiled header), and
# n3rlhf_add_test() to build a GoogleTest binary and register it with labels.

set(N3RLHF_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
# The optimisation of the test programs' own sources (N3RLHF_TEST_OPTIMIZATION=-O2 to change it).
set(N3RLHF_TEST_OPTIMIZATION "-O0" CACHE STRING "Optimisation flag of the GoogleTest programs' own sources")

# n3rlhf_add_library(NAME SOURCES ... DEPENDS ...): a static library for one module under src/.
function(n3rlhf_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  set_property(GLOBAL APPEND PROPERTY N3RLHF_LIBRARIES ${name})  # checked against docs/architecture.md
  target_include_directories(${name} PUBLIC "${PROJECT_SOURCE_DIR}/src")
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${N3RLHF_WARNINGS}>)
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  if(ARG_DEPENDS)
    target_link_libraries(${name} PUBLIC ${ARG_DEPENDS})
  endif()
endfunction()

# One precompiled libtorch header, built once and reused by every target that includes libtorch.
# Why: <torch/torch.h> costs ~15 s per translation unit on these machines without it. Every
# torch target is position independent so that executables (tests) can reuse the same PCH.
#
# libtorch also ships its own (newer) fmt, which comes first on the include path and breaks the
# system spdlog that core/log.hpp includes; a directory holding only the system fmt, put before
# libtorch's, gives spdlog the fmt it was built with (<torch/torch.h> uses no fmt).
function(n3rlhf_use_torch target)
  if(NOT EXISTS "${PROJECT_BINARY_DIR}/system_fmt/fmt")
    get_target_property(system_fmt_include fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
    set(shim "${PROJECT_BINARY_DIR}/system_fmt")
    file(MAKE_DIRECTORY "${shim}")
    file(CREATE_LINK "${system_fmt_include}/fmt" "${shim}/fmt" SYMBOLIC)
  endif()
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  # libtorch.so exports a std::filesystem of its own (another libstdc++'s build). With libtorch
  # ahead of libstdc++ in DT_NEEDED, our std::filesystem calls bind to it and crash
  # (remove_all jumps to null). Naming libstdc++ first on the link line makes it win.
  target_link_options(${target} PUBLIC "LINKER:--no-as-needed" "-lstdc++")
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
  # Prepended after libtorch's directories were added, so that it comes first.
  target_include_directories(${target} SYSTEM BEFORE PUBLIC "${PROJECT_BINARY_DIR}/system_fmt")
  # The shared PCH is compiled with -fPIC; an executable compiled with -fPIE could not use it.
  get_target_property(target_type ${target} TYPE)
  if(target_type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE -fPIC)
  else()
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  endif()
  if(N3RLHF_PCH)
    # Tests compile at -O0 (n3rlhf_add_test): GCC refuses a PCH built at another -O level
    # ("not used because __OPTIMIZE__ not defined"), so they share a PCH of their own.
    get_target_property(is_test ${target} N3RLHF_TEST)
    if(is_test)
      set(pch n3rlhf_torch_pch_tests)
    else()
      set(pch n3rlhf_torch_pch)
    endif()
    if(NOT TARGET ${pch})
      add_library(${pch} STATIC "${PROJECT_SOURCE_DIR}/src/core/torch_pch.cpp")
      target_link_libraries(${pch} PUBLIC ${TORCH_LIBRARIES})
      target_include_directories(${pch} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
      target_include_directories(${pch} SYSTEM BEFORE PUBLIC "${PROJECT_BINARY_DIR}/system_fmt")
      target_include_directories(${pch} PRIVATE "${PROJECT_SOURCE_DIR}/src")
      set_target_properties(${pch} PROPERTIES POSITION_INDEPENDENT_CODE ON)
      if(is_test)
        target_compile_options(${pch} PRIVATE ${N3RLHF_TEST_OPTIMIZATION})
      endif()
      target_precompile_headers(${pch} PRIVATE "${PROJECT_SOURCE_DIR}/src/core/torch_pch.hpp")
    endif()
    if(NOT target STREQUAL pch)
      target_precompile_headers(${target} REUSE_FROM ${pch})
    endif()
  endif()
endfunction()

# n3rlhf_add_test(NAME SOURCES ... DEPENDS ... [LABELS ...] [MPI_RANKS N] [TORCH])
# Builds a GoogleTest binary; with MPI_RANKS it runs under mpirun --oversubscribe -np N.
function(n3rlhf_add_test name)
  cmake_parse_arguments(ARG "TORCH" "MPI_RANKS;TIMEOUT" "SOURCES;DEPENDS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  # A test's own code is glue around the optimised libraries: compiled at -O0 it builds in about
  # half the time (tests/ is ~40% of a clean build) and runs no slower that matters.
  set_target_properties(${name} PROPERTIES N3RLHF_TEST ON)
  target_compile_options(${name} PRIVATE ${N3RLHF_TEST_OPTIMIZATION})
  target_link_libraries(${name} PRIVATE ${ARG_DEPENDS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/src" "${PROJECT_SOURCE_DIR}/tests")
  target_compile_definitions(${name} PRIVATE
    N3RLHF_SOURCE_DIR="${PROJECT_SOURCE_DIR}" N3RLHF_BINARY_DIR="${PROJECT_BINARY_DIR}")
  if(ARG_TORCH)
    n3rlhf_use_torch(${name})
  endif()
  set(labels ${ARG_LABELS})
  if(ARG_MPI_RANKS)
    add_test(NAME ${name} COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root
             -np ${ARG_MPI_RANKS} $<TARGET_FILE:${name}>)
    list(APPEND labels mpi)
  else()
    add_test(NAME ${name} COMMAND ${name})
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT ${ARG_TIMEOUT}
    WORKING_DIRECTORY "${PROJECT_BINARY_DIR}")
endfunction()
