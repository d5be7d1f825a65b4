// s3_xml.hpp: the little XML that S3's REST API speaks: the text of named elements in a
// response (ListObjectsV2, InitiateMultipartUpload, errors), entity escaping for request bodies.
// S3's responses are flat and namespace-free where we read them, so no general XML parser is needed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf {

// The unescaped text of every <tag>...</tag> in `xml`, in order (elements nested in another
// element of the same name are not expected in S3's responses).
std::vector<std::string> xml_element_texts(std::string_view xml, std::string_view tag);
// The first one, or "" when there is none.
std::string xml_element_text(std::string_view xml, std::string_view tag);
// The raw inner XML of every <tag>...</tag> (e.g. each <Contents> of a listing).
std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag);
std::string xml_escape(std::string_view text);
std::string xml_unescape(std::string_view text);

}  // namespace n3rlhf
