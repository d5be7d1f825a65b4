// mpi_test_main.cpp: the main() of GoogleTest suites that run under mpirun with MPI_COMM_WORLD:
// MPI started with thread support (communicators run collectives from helper threads), one report
// printed by rank 0, and an exit status that fails on every rank when any rank failed.
// Suites list ${N3RLHF_MPI_TEST_MAIN} among their sources (an object file, so it takes the place
// of gtest_main's main()).
#include <gtest/gtest.h>

#include <mpi.h>

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    // One report, from rank 0; the exit status below still reflects every rank.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int status = RUN_ALL_TESTS();
  int worst = status;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
