// torch_pch.cpp: the translation unit that carries the shared libtorch precompiled header.
#include "core/torch_pch.hpp"
