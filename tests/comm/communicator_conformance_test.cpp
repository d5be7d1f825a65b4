// communicator_conformance_test.cpp: the one conformance suite every Communicator backend must
// pass: reductions (sum, max, min, avg) across dtypes, reduce-scatter and all-gather with the
// padding contract for uneven sizes, empty tensors, broadcast from any root, send/recv rings,
// several operations in flight, sub-groups from split, traffic counters and argument errors.
// Every rank computes the expected values itself from the rank numbers.
#include <gtest/gtest.h>

#include <numeric>

#include "comm/padded_shards.hpp"
#include "comm/comm_test_world.hpp"
#include "core/error.hpp"

namespace n3rlhf {
namespace {

using testing::CommTestWorld;

CommTestWorld& kWorld = CommTestWorld::get();

class Conformance : public ::testing::Test {
 protected:
  Communicator& world() { return kWorld.world(); }
  int rank() { return world().rank(); }
  int size() { return world().size(); }
  torch::TensorOptions on_device(torch::ScalarType dtype) {
    return torch::TensorOptions().dtype(dtype).device(kWorld.device());
  }
  // Rank-specific data that any rank can rebuild: what `peer` contributes.
  torch::Tensor contribution(int peer, int64_t numel, torch::ScalarType dtype) {
    torch::manual_seed(1000 + peer);
    return torch::randn({numel}, torch::kFloat32).to(dtype);
  }
};

void expect_code_14(const std::function<void()>& call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "expected RLHF014 mentioning '" << fragment << "'";
  } catch (const TrainingError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kDistributedSyncFailure);
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST_F(Conformance, WorldMatchesTheLaunch) {
  EXPECT_EQ(size(), kWorld.mpi().world_size());
  EXPECT_EQ(rank(), kWorld.mpi().rank());
  EXPECT_EQ(world().name(), "world");
  EXPECT_EQ(world().world_rank_of(rank()), rank());
  const std::string backend = world().backend_name();
  if (size() == 1 && !kWorld.device().is_cuda()) {
    EXPECT_EQ(backend, "local");
  } else {
    EXPECT_TRUE(backend == "mpi" || backend == "nccl") << backend;
  }
}

TEST_F(Conformance, AllReduceSumOfFloat32) {
  torch::Tensor tensor = torch::arange(10, on_device(torch::kFloat32)) + rank();
  world().all_reduce(tensor)->wait();
  const torch::Tensor expected = torch::arange(10, torch::kFloat32) * size() + size() * (size() - 1) / 2.0;
  EXPECT_TRUE(torch::equal(tensor.cpu(), expected)) << tensor;
}

TEST_F(Conformance, AllReduceMaxMinAndAvg) {
  // Rank r holds [r, -r, r*r]: max/min pick the extreme ranks; avg of r is (n-1)/2.
  auto make = [&] { return torch::tensor({1.0f * rank(), -1.0f * rank(), 1.0f * rank() * rank()}, on_device(torch::kFloat32)); };
  torch::Tensor max = make();
  torch::Tensor min = make();
  torch::Tensor avg = make();
  world().all_reduce(max, {ReduceOp::kMax})->wait();
  world().all_reduce(min, {ReduceOp::kMin})->wait();
  world().all_reduce(avg, {ReduceOp::kAvg})->wait();
  const float n = static_cast<float>(size());
  EXPECT_TRUE(torch::equal(max.cpu(), torch::tensor({n - 1, 0.0f, (n - 1) * (n - 1)})));
  EXPECT_TRUE(torch::equal(min.cpu(), torch::tensor({0.0f, -(n - 1), 0.0f})));
  float squares = 0;
  for (int r = 0; r < size(); ++r) squares += static_cast<float>(r * r);
  EXPECT_TRUE(torch::allclose(avg.cpu(), torch::tensor({(n - 1) / 2, -(n - 1) / 2, squares / n})));
}

TEST_F(Conformance, AllReduceOfIntegersIsExact) {
  // Beyond 2^53, where a detour through doubles would lose the low bits.
  const int64_t big = int64_t{1} << 55;
  torch::Tensor tensor = torch::tensor({big + rank(), int64_t{-7} * rank()}, on_device(torch::kInt64));
  world().all_reduce(tensor)->wait();
  const int64_t n = size();
  EXPECT_EQ(tensor[0].item<int64_t>(), big * n + n * (n - 1) / 2);
  EXPECT_EQ(tensor[1].item<int64_t>(), -7 * n * (n - 1) / 2);
  torch::Tensor small = torch::full({3}, rank() + 1, on_device(torch::kInt32));
  world().all_reduce(small, {ReduceOp::kMax})->wait();
  EXPECT_EQ(small.max().item<int32_t>(), size());
}

TEST_F(Conformance, Bfloat16SumsAccumulateInFloat) {
  const int64_t numel = 257;
  torch::Tensor tensor = contribution(rank(), numel, torch::kBFloat16).to(kWorld.device());
  world().all_reduce(tensor)->wait();
  torch::Tensor exact = torch::zeros({numel}, torch::kFloat32);
  for (int peer = 0; peer < size(); ++peer) exact += contribution(peer, numel, torch::kBFloat16).to(torch::kFloat32);
  // One rounding of the f32 sum to bf16 (relative error 2^-8), not one per rank.
  const torch::Tensor result = tensor.cpu().to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(result, exact.to(torch::kBFloat16).to(torch::kFloat32), 1e-2, 1e-2))
      << (result - exact).abs().max();
  // Small integers are exact in bf16 whatever the order.
  torch::Tensor counts = torch::full({5}, rank() + 1, on_device(torch::kBFloat16));
  world().all_reduce(counts)->wait();
  EXPECT_EQ(counts.cpu().to(torch::kFloat32)[0].item<float>(), size() * (size() + 1) / 2.0f);
  torch::Tensor halves = torch::full({4}, 0.5 * rank(), on_device(torch::kFloat16));
  world().all_reduce(halves, {ReduceOp::kAvg})->wait();
  EXPECT_FLOAT_EQ(halves.cpu().to(torch::kFloat32)[3].item<float>(), 0.25f * (size() - 1));
}

TEST_F(Conformance, EveryDtypeSums) {
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kFloat64, torch::kBFloat16, torch::kFloat16, torch::kInt64,
                                  torch::kInt32, torch::kInt8, torch::kUInt8}) {
    torch::Tensor tensor = torch::full({6}, 2, on_device(dtype));
    world().all_reduce(tensor)->wait();
    EXPECT_EQ(tensor.cpu().to(torch::kFloat64).sum().item<double>(), 12.0 * size()) << c10::toString(dtype);
  }
}

TEST_F(Conformance, ReduceScatterGivesEachRankItsShard) {
  const int64_t shard = 4;
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
    // Rank r contributes (r + 1) * [0, 1, 2, ...]; the sum is n(n+1)/2 * [0, 1, ...].
    torch::Tensor input = (torch::arange(shard * size(), torch::kInt64) * (rank() + 1)).to(on_device(dtype));
    torch::Tensor output = torch::empty({shard}, on_device(dtype));
    world().reduce_scatter(input, output)->wait();
    const torch::Tensor expected =
        torch::arange(rank() * shard, (rank() + 1) * shard, torch::kInt64) * (size() * (size() + 1) / 2);
    EXPECT_TRUE(torch::equal(output.cpu().to(torch::kInt64), expected)) << c10::toString(dtype) << output;
  }
  torch::Tensor input = torch::full({size() * 3}, 1.0f * rank(), on_device(torch::kFloat32));
  torch::Tensor output = torch::empty({3}, on_device(torch::kFloat32));
  world().reduce_scatter(input, output, {ReduceOp::kAvg})->wait();
  EXPECT_FLOAT_EQ(output[2].item<float>(), (size() - 1) / 2.0f);
  world().reduce_scatter(input, output, {ReduceOp::kMax})->wait();
  EXPECT_FLOAT_EQ(output[0].item<float>(), size() - 1.0f);
}

TEST_F(Conformance, AllGatherConcatenatesInRankOrder) {
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
    torch::Tensor input = torch::full({5}, rank() * 10, on_device(dtype));
    torch::Tensor output = torch::empty({5 * size()}, on_device(dtype));
    world().all_gather(input, output)->wait();
    const torch::Tensor expected = (torch::arange(size(), torch::kInt64) * 10).repeat_interleave(5);
    EXPECT_TRUE(torch::equal(output.cpu().to(torch::kInt64), expected)) << c10::toString(dtype);
  }
}

TEST_F(Conformance, UnevenBuffersRoundTripThroughPaddedShards) {
  // The contract: pad to world size x alignment once, reduce-scatter, work on the valid part of
  // the shard, all-gather, read the first numel elements.
  for (int64_t numel : {1, 10, 13, 129}) {
    for (int64_t alignment : {1, 4}) {
      const PaddedShards shards = padded_shards(numel, size(), alignment);
      ASSERT_EQ(shards.padded_numel % (size() * alignment), 0);
      ASSERT_GE(shards.padded_numel, numel);
      torch::Tensor flat = torch::zeros({shards.padded_numel}, on_device(torch::kFloat32));
      flat.narrow(0, 0, numel).copy_(contribution(rank(), numel, torch::kFloat32));
      torch::Tensor shard = torch::empty({shards.shard_numel}, on_device(torch::kFloat32));
      world().reduce_scatter(flat, shard)->wait();
      torch::Tensor exact = torch::zeros({numel}, torch::kFloat32);
      for (int peer = 0; peer < size(); ++peer) exact += contribution(peer, numel, torch::kFloat32);
      const int64_t valid = shards.valid_numel(rank());
      if (valid > 0) {
        EXPECT_TRUE(torch::allclose(shard.narrow(0, 0, valid).cpu(), exact.narrow(0, shards.offset(rank()), valid),
                                    1e-5, 1e-5));
      }
      // The padding stays zero: it never mixes into real elements.
      EXPECT_EQ(shard.narrow(0, valid, shards.shard_numel - valid).abs().sum().item<float>(), 0.0f);
      torch::Tensor gathered = torch::empty({shards.padded_numel}, on_device(torch::kFloat32));
      world().all_gather(shard, gathered)->wait();
      EXPECT_TRUE(torch::allclose(gathered.narrow(0, 0, numel).cpu(), exact, 1e-5, 1e-5)) << numel;
    }
  }
}

TEST_F(Conformance, UnequalShardsAreRejectedOnEveryRank) {
  torch::Tensor output = torch::empty({3}, on_device(torch::kFloat32));
  torch::Tensor input = torch::empty({3 * size() + 1}, on_device(torch::kFloat32));
  expect_code_14([&] { world().reduce_scatter(input, output); }, "padded_shards");
  torch::Tensor gathered = torch::empty({3 * size() + 2}, on_device(torch::kFloat32));
  expect_code_14([&] { world().all_gather(output, gathered); }, "all_gather");
  torch::Tensor integers = torch::ones({2}, on_device(torch::kInt64));
  expect_code_14([&] { world().all_reduce(integers, {ReduceOp::kAvg}); }, "avg needs a floating tensor");
  torch::Tensor strided = torch::ones({4, 4}, on_device(torch::kFloat32)).t();
  expect_code_14([&] { world().all_reduce(strided); }, "not contiguous");
  torch::Tensor booleans = torch::ones({2}, on_device(torch::kBool));
  expect_code_14([&] { world().all_reduce(booleans); }, "dtype");
  expect_code_14([&] { world().broadcast(integers, {size()}); }, "outside the group");
  // The group is still usable: argument errors fail before anything is sent.
  world().barrier()->wait();
}

TEST_F(Conformance, EmptyTensorsAreValid) {
  world().reset_traffic();
  torch::Tensor empty = torch::empty({0}, on_device(torch::kFloat32));
  torch::Tensor empty_out = torch::empty({0}, on_device(torch::kFloat32));
  world().all_reduce(empty)->wait();
  world().reduce_scatter(empty, empty_out)->wait();
  world().all_gather(empty, empty_out)->wait();
  world().broadcast(empty, {0})->wait();
  world().send_recv(empty, (rank() + 1) % size(), empty_out, (rank() + size() - 1) % size())->wait();
  const TrafficSnapshot traffic = world().traffic();
  EXPECT_EQ(traffic.total().bytes_sent, 0u);
  EXPECT_EQ(traffic.total().bytes_received, 0u);
  EXPECT_EQ(traffic[CommOp::kAllReduce].calls, 1u);
}

TEST_F(Conformance, BroadcastFromEveryRoot) {
  for (int root = size() - 1; root >= 0; --root) {
    for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
      // Small integers, exact in bf16 too (it has 8 significant bits).
      torch::Tensor tensor = rank() == root ? (torch::arange(9, torch::kInt64) + 16 * root).to(on_device(dtype))
                                            : torch::zeros({9}, on_device(dtype));
      world().broadcast(tensor, {root})->wait();
      EXPECT_TRUE(torch::equal(tensor.cpu().to(torch::kInt64), torch::arange(9, torch::kInt64) + 16 * root))
          << "root " << root << " " << c10::toString(dtype);
    }
  }
}

TEST_F(Conformance, SendRecvRingPassesEveryValueOnce) {
  const int right = (rank() + 1) % size();
  const int left = (rank() + size() - 1) % size();
  // Grouped exchange: a full turn of the ring brings every rank's value back home.
  torch::Tensor value = torch::full({3}, rank(), on_device(torch::kInt64));
  torch::Tensor seen = torch::zeros({size()}, torch::kInt64);
  for (int step = 0; step < size(); ++step) {
    seen[value[0].item<int64_t>()] += 1;
    torch::Tensor incoming = torch::empty_like(value);
    world().send_recv(value, right, incoming, left)->wait();
    value = incoming;
  }
  EXPECT_TRUE(torch::equal(seen, torch::ones({size()}, torch::kInt64)));
  EXPECT_EQ(value[0].item<int64_t>(), rank());
  // Separate send and receive with tags, both in flight before either is waited on. Even ranks
  // send first, odd ranks receive first: NCCL serialises a rank's operations on one stream, so
  // everyone receiving first would deadlock a ring (send_recv above is the way to exchange).
  // NCCL cannot send to itself outside a group, so a world of one on NCCL skips this part.
  if (size() == 1 && std::string(world().backend_name()) == "nccl") return;
  torch::Tensor outgoing = torch::full({4}, 1.5f * rank(), on_device(torch::kFloat32));
  torch::Tensor incoming = torch::empty({4}, on_device(torch::kFloat32));
  WorkHandle first = rank() % 2 == 0 ? world().send(outgoing, {right, 7}) : world().recv(incoming, {left, 7});
  WorkHandle second = rank() % 2 == 0 ? world().recv(incoming, {left, 7}) : world().send(outgoing, {right, 7});
  second->wait();
  first->wait();
  EXPECT_FLOAT_EQ(incoming[0].item<float>(), 1.5f * left);
}

TEST_F(Conformance, SeveralOperationsInFlight) {
  std::vector<torch::Tensor> tensors;
  std::vector<WorkHandle> works;
  for (int i = 0; i < 4; ++i) {
    tensors.push_back(torch::full({1000}, 1.0f * (i + 1) * (rank() + 1), on_device(torch::kFloat32)));
    works.push_back(world().all_reduce(tensors.back()));
  }
  torch::Tensor scatter_in = torch::ones({8 * size()}, on_device(torch::kFloat32));
  torch::Tensor scatter_out = torch::empty({8}, on_device(torch::kFloat32));
  works.push_back(world().reduce_scatter(scatter_in, scatter_out));
  torch::Tensor gather_in = torch::full({2}, rank(), on_device(torch::kInt32));
  torch::Tensor gather_out = torch::empty({2 * size()}, on_device(torch::kInt32));
  works.push_back(world().all_gather(gather_in, gather_out));
  const bool blocking = std::string(world().backend_name()) != "nccl";
  // Waited on in reverse order of issue: completion must not depend on waiting order.
  for (auto it = works.rbegin(); it != works.rend(); ++it) {
    EXPECT_EQ((*it)->is_blocking(), blocking);
    EXPECT_TRUE((*it)->wait_for(std::chrono::seconds(60)));
    (*it)->wait();
    EXPECT_TRUE((*it)->is_completed());
  }
  const float ranks_sum = size() * (size() + 1) / 2.0f;
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(tensors[i][999].item<float>(), (i + 1) * ranks_sum);
  EXPECT_FLOAT_EQ(scatter_out[7].item<float>(), 1.0f * size());
  EXPECT_EQ(gather_out[2 * size() - 1].item<int32_t>(), size() - 1);
  EXPECT_EQ(works[0]->operation(), CommOp::kAllReduce);
  EXPECT_EQ(works[5]->operation(), CommOp::kAllGather);
}

TEST_F(Conformance, SplitMakesWorkingSubgroups) {
  // Parity groups, ordered by descending rank through the key.
  SplitOptions parity;
  parity.color = rank() % 2;
  parity.key = -rank();
  parity.name = "parity";
  std::unique_ptr<Communicator> group = world().split(parity);
  ASSERT_NE(group, nullptr);
  std::vector<int> members;
  for (int r = size() - 1; r >= 0; --r) {
    if (r % 2 == rank() % 2) members.push_back(r);
  }
  EXPECT_EQ(group->size(), static_cast<int>(members.size()));
  EXPECT_EQ(group->world_rank_of(group->rank()), rank());
  EXPECT_EQ(group->name(), "world/parity");
  for (int i = 0; i < group->size(); ++i) EXPECT_EQ(group->world_rank_of(i), members[i]);
  torch::Tensor tensor = torch::full({2}, rank(), on_device(torch::kInt64));
  group->all_reduce(tensor)->wait();
  EXPECT_EQ(tensor[0].item<int64_t>(), std::accumulate(members.begin(), members.end(), int64_t{0}));
  // Sub-groups split again, and a rank may stay out.
  SplitOptions without_first;
  without_first.color = rank() == 0 ? SplitOptions::kNoGroup : 0;
  without_first.key = rank();
  std::unique_ptr<Communicator> rest = world().split(without_first);
  if (rank() == 0) {
    EXPECT_EQ(rest, nullptr);
  } else {
    ASSERT_NE(rest, nullptr);
    EXPECT_EQ(rest->size(), size() - 1);
    EXPECT_EQ(rest->rank(), rank() - 1);
    torch::Tensor ones = torch::ones({1}, on_device(torch::kFloat32));
    rest->all_reduce(ones)->wait();
    EXPECT_FLOAT_EQ(ones.item<float>(), size() - 1.0f);
  }
  // The parent stays usable beside its children.
  world().barrier()->wait();
}

TEST_F(Conformance, TrafficCountersMatchTheRingAlgorithm) {
  world().reset_traffic();
  EXPECT_EQ(world().traffic().total().calls, 0u);
  const uint64_t n = size();
  torch::Tensor reduced = torch::ones({1000}, on_device(torch::kFloat32));  // 4000 bytes
  world().all_reduce(reduced)->wait();
  torch::Tensor scatter_in = torch::ones({64 * size()}, on_device(torch::kBFloat16));
  torch::Tensor scatter_out = torch::empty({64}, on_device(torch::kBFloat16));  // 128-byte shards
  world().reduce_scatter(scatter_in, scatter_out)->wait();
  torch::Tensor gather_in = torch::ones({16}, on_device(torch::kInt64));  // 128 bytes each
  torch::Tensor gather_out = torch::empty({16 * size()}, on_device(torch::kInt64));
  world().all_gather(gather_in, gather_out)->wait();
  torch::Tensor weights = torch::ones({50}, on_device(torch::kFloat32));  // 200 bytes
  world().broadcast(weights, {0})->wait();
  torch::Tensor incoming = torch::empty({10}, on_device(torch::kInt32));
  world().send_recv(torch::ones({10}, on_device(torch::kInt32)), (rank() + 1) % size(), incoming,
                    (rank() + size() - 1) % size())
      ->wait();
  world().barrier()->wait();
  const TrafficSnapshot traffic = world().traffic();
  EXPECT_EQ(traffic[CommOp::kAllReduce].bytes_sent, 2 * 4000 * (n - 1) / n);
  EXPECT_EQ(traffic[CommOp::kAllReduce].bytes_received, 2 * 4000 * (n - 1) / n);
  EXPECT_EQ(traffic[CommOp::kReduceScatter].bytes_sent, 128 * (n - 1));
  EXPECT_EQ(traffic[CommOp::kAllGather].bytes_received, 128 * (n - 1));
  EXPECT_EQ(traffic[CommOp::kBroadcast].bytes_sent, rank() == 0 ? 200 * (n - 1) : 0u);
  EXPECT_EQ(traffic[CommOp::kBroadcast].bytes_received, rank() == 0 ? 0u : 200u);
  EXPECT_EQ(traffic[CommOp::kSend].bytes_sent, 40u);
  EXPECT_EQ(traffic[CommOp::kRecv].bytes_received, 40u);
  EXPECT_EQ(traffic[CommOp::kBarrier].calls, 1u);
  EXPECT_EQ(traffic.total().calls, 7u);
  EXPECT_NE(traffic.to_string().find("all_reduce: calls=1"), std::string::npos) << traffic.to_string();
  // Sum over ranks: what leaves one rank arrives at another.
  torch::Tensor totals = torch::tensor({static_cast<int64_t>(traffic.total().bytes_sent),
                                        static_cast<int64_t>(traffic.total().bytes_received)},
                                       on_device(torch::kInt64));
  world().all_reduce(totals)->wait();
  EXPECT_EQ(totals[0].item<int64_t>(), totals[1].item<int64_t>());
  world().reset_traffic();
  EXPECT_EQ(world().traffic().total().bytes_sent, 0u);
}

// Backend-independent contract pieces, checked in every run.
TEST(CommContract, PaddedShardsCoverTheBufferOnce) {
  for (int world_size : {1, 2, 3, 4, 7}) {
    for (int64_t numel : {0, 1, 5, 128, 1000, 1001}) {
      const PaddedShards shards = padded_shards(numel, world_size, 128);
      EXPECT_EQ(shards.shard_numel % 128, 0);
      EXPECT_EQ(shards.padded_numel, shards.shard_numel * world_size);
      EXPECT_LT(shards.padded_numel - numel, static_cast<int64_t>(world_size) * 128 + world_size);
      int64_t covered = 0;
      for (int r = 0; r < world_size; ++r) covered += shards.valid_numel(r);
      EXPECT_EQ(covered, numel);
    }
  }
}

TEST(CommContract, BackendChoiceFollowsDeviceAndWorld) {
  const torch::Device cpu(torch::kCPU);
  const torch::Device gpu(torch::kCUDA, 0);
  EXPECT_EQ(resolve_backend(CommBackend::kAuto, 1, false, cpu), CommBackend::kLocal);
  EXPECT_EQ(resolve_backend(CommBackend::kAuto, 1, true, gpu), CommBackend::kLocal);
  EXPECT_EQ(resolve_backend(CommBackend::kAuto, 4, true, cpu), CommBackend::kMpi);
  EXPECT_EQ(resolve_backend(CommBackend::kAuto, 4, true, gpu),
            nccl_backend_available() ? CommBackend::kNccl : CommBackend::kMpi);
  EXPECT_EQ(resolve_backend(CommBackend::kMpi, 4, true, gpu), CommBackend::kMpi);
  auto refused = [&](CommBackend backend, int world_size, bool mpi, const torch::Device& device) {
    try {
      resolve_backend(backend, world_size, mpi, device);
      return false;
    } catch (const ConfigurationError& error) {
      return error.code() == ErrorCode::kIncompatibleOptions;
    }
  };
  EXPECT_TRUE(refused(CommBackend::kLocal, 2, true, cpu));
  EXPECT_TRUE(refused(CommBackend::kNccl, 2, true, cpu));
  EXPECT_TRUE(refused(CommBackend::kMpi, 1, false, cpu));
  EXPECT_TRUE(refused(CommBackend::kNccl, 2, false, gpu));
}

}  // namespace
}  // namespace n3rlhf
