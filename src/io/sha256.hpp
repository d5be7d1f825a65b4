// sha256.hpp: SHA-256 now lives in core (core/sha256.hpp), shared with the tokenizer; this header
// forwards to it so that io code written against the earlier location keeps building.
#pragma once

#include "core/sha256.hpp"
