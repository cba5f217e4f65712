#include "net/auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <fstream>
#include <iterator>
#include <random>

namespace dgpt::net {

Result<AuthKey> LoadAuthKey(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(path + ": cannot read the auth key file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto last = text.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) return Status::Error(path + ": the auth key file is empty");
  text = text.substr(first, last - first + 1);
  if (text.size() < 16) {
    return Status::Error(path + ": the auth key is shorter than 16 bytes; use e.g. " +
                         "`openssl rand -hex 32 > " + path + "`");
  }
  return AuthKey(text.begin(), text.end());
}

Bytes32 RandomNonce() {
  Bytes32 nonce;
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    std::random_device device;  // only if OpenSSL's generator is unavailable
    for (uint8_t& byte : nonce) byte = static_cast<uint8_t>(device());
  }
  return nonce;
}

Bytes32 ComputeMac(const AuthKey& key, bool connected_side, const Bytes32& peer_nonce,
                   const Bytes32& own_nonce) {
  std::vector<uint8_t> message;
  const std::string_view label = "dgpt-auth-v1";
  message.insert(message.end(), label.begin(), label.end());
  message.push_back(connected_side ? 'C' : 'S');
  message.insert(message.end(), peer_nonce.begin(), peer_nonce.end());
  message.insert(message.end(), own_nonce.begin(), own_nonce.end());
  Bytes32 mac{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message.data(), message.size(),
       mac.data(), &length);
  return mac;
}

bool MacEquals(const Bytes32& a, const Bytes32& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace dgpt::net
