// s3_xml.cpp: element extraction and entity escaping for S3's XML.
#include "storage/s3_xml.hpp"

#include <cstdlib>

namespace n3rlhf {

std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> found;
  const std::string open = "<" + std::string(tag);
  const std::string close = "</" + std::string(tag) + ">";
  size_t at = 0;
  while ((at = xml.find(open, at)) != std::string_view::npos) {
    const size_t name_end = at + open.size();
    if (name_end >= xml.size()) break;
    const char next = xml[name_end];
    if (next != '>' && next != ' ' && next != '/') {  // <KeyCount> when looking for <Key>
      at = name_end;
      continue;
    }
    const size_t tag_end = xml.find('>', name_end);
    if (tag_end == std::string_view::npos) break;
    if (xml[tag_end - 1] == '/') {  // <Tag/>
      found.push_back(std::string_view());
      at = tag_end + 1;
      continue;
    }
    const size_t end = xml.find(close, tag_end + 1);
    if (end == std::string_view::npos) break;
    found.push_back(xml.substr(tag_end + 1, end - tag_end - 1));
    at = end + close.size();
  }
  return found;
}

std::vector<std::string> xml_element_texts(std::string_view xml, std::string_view tag) {
  std::vector<std::string> texts;
  for (std::string_view inner : xml_elements(xml, tag)) texts.push_back(xml_unescape(inner));
  return texts;
}

std::string xml_element_text(std::string_view xml, std::string_view tag) {
  const std::vector<std::string_view> found = xml_elements(xml, tag);
  return found.empty() ? std::string() : xml_unescape(found.front());
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string xml_unescape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '&') {
      out += text[i];
      continue;
    }
    const size_t end = text.find(';', i);
    if (end == std::string_view::npos) {
      out += text.substr(i);
      break;
    }
    const std::string_view entity = text.substr(i + 1, end - i - 1);
    if (entity == "amp") out += '&';
    else if (entity == "lt") out += '<';
    else if (entity == "gt") out += '>';
    else if (entity == "quot") out += '"';
    else if (entity == "apos") out += '\'';
    else if (!entity.empty() && entity[0] == '#') {
      const bool hex = entity.size() > 1 && (entity[1] == 'x' || entity[1] == 'X');
      const std::string digits(entity.substr(hex ? 2 : 1));
      const unsigned long code = std::strtoul(digits.c_str(), nullptr, hex ? 16 : 10);
      // UTF-8 of the code point
      if (code < 0x80) {
        out += static_cast<char>(code);
      } else if (code < 0x800) {
        out += static_cast<char>(0xC0 | (code >> 6));
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else if (code < 0x10000) {
        out += static_cast<char>(0xE0 | (code >> 12));
        out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (code >> 18));
        out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code & 0x3F));
      }
    } else {
      out += text.substr(i, end - i + 1);
    }
    i = end;
  }
  return out;
}

}  // namespace n3rlhf
