#pragma once
// lakh/pg/detail/wal_event.hpp: how an outbox event of the wal store is written into a
// transactional logical message (pg_logical_emit_message) and read back, and the names of a
// wal store's slot and publication. Internal: lakh::pg::outbox writes, wal_relay reads.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lakh::pg::detail {

// A message's content: "lakh1:" + the event's uuid (36 characters) + the fields topic, key,
// payload, then each header's name and value, each as "<decimal byte length>:<bytes>".
inline constexpr std::string_view wal_content_version = "lakh1:";
inline constexpr std::size_t wal_uuid_size = 36;

// The message prefix of the outbox `table`: a slot's reader keeps the messages that carry it.
inline std::string wal_message_prefix(std::string_view table) {
  return "lakh_outbox:" + std::string(table);
}

// The fields after the uuid.
inline std::string wal_content_fields(std::span<const std::string_view> fields) {
  std::size_t size = 0;
  for (const auto f : fields) {
    size += f.size() + 12;
  }
  std::string out;
  out.reserve(size);
  for (const auto f : fields) {
    out += std::to_string(f.size());
    out += ':';
    out += f;
  }
  return out;
}

// Splits a message's content into the uuid and the fields (views into `content`); false if
// it is not an event of this format (another writer used the prefix).
inline bool parse_wal_content(std::string_view content, std::string_view &uuid,
                              std::vector<std::string_view> &fields) {
  fields.clear();
  if (content.substr(0, wal_content_version.size()) != wal_content_version ||
      content.size() < wal_content_version.size() + wal_uuid_size) {
    return false;
  }
  uuid = content.substr(wal_content_version.size(), wal_uuid_size);
  content.remove_prefix(wal_content_version.size() + wal_uuid_size);
  while (!content.empty()) {
    std::size_t n = 0;
    std::size_t i = 0;
    for (; i < content.size() && content[i] >= '0' && content[i] <= '9' && i < 10; ++i) {
      n = n * 10 + static_cast<std::size_t>(content[i] - '0');
    }
    if (i == 0 || i >= content.size() || content[i] != ':' || content.size() - i - 1 < n) {
      return false;
    }
    fields.push_back(content.substr(i + 1, n));
    content.remove_prefix(i + 1 + n);
  }
  return fields.size() >= 3 && fields.size() % 2 == 1;
}

// The default slot (and publication) name of `table` in `database`: "lakh_<database>_<table>"
// with every character outside [a-z0-9_] replaced by '_' (slots are per cluster, so the
// database is part of the name); names over 63 bytes keep 54 and add a hash of the whole.
inline std::string wal_slot_name(std::string_view database, std::string_view table) {
  std::string name = "lakh_" + std::string(database) + "_" + std::string(table);
  std::uint32_t hash = 2166136261U; // FNV-1a
  for (auto &c : name) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 16777619U;
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) {
      c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : '_';
    }
  }
  if (name.size() > 63) {
    static constexpr char hex[] = "0123456789abcdef";
    name.resize(54);
    name += '_';
    for (int shift = 28; shift >= 0; shift -= 4) {
      name += hex[(hash >> shift) & 0xfU];
    }
  }
  return name;
}

} // namespace lakh::pg::detail
