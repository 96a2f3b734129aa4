#pragma once
// examples/saas/common/crypto.hpp: the few OpenSSL calls the services need: SHA-256 and
// HMAC-SHA256 in hex, random bytes from the CSPRNG, and a comparison in constant time.

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace saas {

inline std::string to_hex(const unsigned char *p, std::size_t n) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out += hex[p[i] >> 4U];
    out += hex[p[i] & 15U];
  }
  return out;
}

/// SHA-256 of `s`, 64 hex digits.
inline std::string sha256_hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return to_hex(md, n);
}

/// HMAC-SHA256 of `message` under `secret`, 64 hex digits.
inline std::string hmac_sha256_hex(std::string_view secret, std::string_view message) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char *>(message.data()), message.size(), md, &n);
  return to_hex(md, n);
}

/// `bytes` random bytes from OpenSSL's CSPRNG, in hex. @throws std::runtime_error on failure.
inline std::string random_hex(std::size_t bytes) {
  std::string b(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char *>(b.data()), static_cast<int>(bytes)) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return to_hex(reinterpret_cast<const unsigned char *>(b.data()), bytes);
}

/// a == b, in time independent of where they differ.
inline bool equal_constant_time(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace saas
