// tensorboard_sink_encoding.hpp: the bytes of a TensorBoard event file, encoded by hand: CRC32C,
// TFRecord framing, and the Event / Summary protobuf messages (only the fields scalars need).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace n3rlhf::tensorboard {

// CRC-32C (Castagnoli), the checksum TFRecord uses.
uint32_t crc32c(std::string_view bytes);
// TFRecord stores checksums masked so that a CRC of data that holds CRCs stays well distributed.
uint32_t masked_crc32c(std::string_view bytes);

// One TFRecord: uint64 length (little-endian), masked CRC of the length bytes, the data, masked
// CRC of the data.
std::string frame_record(std::string_view data);

// Event{wall_time, step, file_version}: the first record of every event file.
std::string encode_file_version_event(double wall_time, std::string_view version = "brain.Event:2");
// Event{wall_time, step, summary{value{tag, simple_value}...}}: the scalars of one step, in one
// event (simple_value is a float32: that is what TensorBoard stores and shows).
std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::vector<std::pair<std::string, float>>& tagged_values);

}  // namespace n3rlhf::tensorboard
