#include "operator/ca/ca.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

#ifdef OPENSSL_IS_BORINGSSL
#error "the operator CA is built against OpenSSL 3, never BoringSSL"
#endif

namespace weft::op {
namespace {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;

constexpr long kRootLifetimeSeconds = 10L * 365 * 24 * 3600;
constexpr int kBackdateSeconds = 60;  // tolerate small clock skew between nodes

// The OpenSSL error queue as one string (and cleared).
std::string SslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    absl::StrAppend(&out, out.empty() ? "" : "; ", buf);
  }
  return out.empty() ? "no OpenSSL error reported" : out;
}

absl::Status SslError(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", SslErrors()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes atomically (temp file + rename) with the given mode.
absl::Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    off += static_cast<size_t>(n);
  }
  ::fchmod(fd, mode);  // umask may have narrowed it; never widen the key beyond `mode`
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path, mode_t mode) {
  // mkdir -p
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), pos == path.size() ? mode : 0755) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create directory ", part, ": ", std::strerror(errno)));
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::StatusOr<std::string> PemOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("PEM_write_bio_X509");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> PemOfKey(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// A random positive 128-bit serial (RFC 5280 allows up to 20 octets).
absl::StatusOr<BnPtr> RandomSerial() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) return SslError("RAND_bytes");
  b[0] = (b[0] & 0x7f) | 0x40;  // positive, and always 16 bytes long
  BnPtr bn(BN_bin2bn(b, sizeof b, nullptr));
  if (!bn) return SslError("BN_bin2bn");
  return bn;
}

absl::Status SetSerial(X509* cert, std::string* hex_out) {
  absl::StatusOr<BnPtr> bn = RandomSerial();
  if (!bn.ok()) return bn.status();
  ASN1_INTEGER* serial = X509_get_serialNumber(cert);
  if (!BN_to_ASN1_INTEGER(bn->get(), serial)) return SslError("BN_to_ASN1_INTEGER");
  if (hex_out) {
    char* hex = BN_bn2hex(bn->get());
    if (!hex) return SslError("BN_bn2hex");
    *hex_out = hex;
    OPENSSL_free(hex);
  }
  return absl::OkStatus();
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return SslError(absl::StrCat("extension ", OBJ_nid2sn(nid), "=", value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return SslError("X509_add_ext");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ToUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return SslError("ASN1_TIME_to_tm");
  return static_cast<int64_t>(timegm(&tm));
}

std::vector<std::string> UriSans(STACK_OF(X509_EXTENSION) * exts, bool* has_san) {
  std::vector<std::string> out;
  *has_san = false;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  *has_san = true;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = gn->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

absl::StatusOr<X509Ptr> MakeRoot(EVP_PKEY* key) {
  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return SslError("X509_set_version");
  if (absl::Status s = SetSerial(cert.get(), nullptr); !s.ok()) return s;
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("weft"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("weft mesh root"), -1, -1,
                                 0) != 1) {
    return SslError("X509_NAME_add_entry_by_txt");
  }
  if (X509_set_issuer_name(cert.get(), name) != 1) return SslError("X509_set_issuer_name");
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), kRootLifetimeSeconds)) {
    return SslError("X509_gmtime_adj");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return SslError("X509_set_pubkey");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExt(cert.get(), cert.get(), nid, value); !s.ok()) return s;
  }
  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0) return SslError("X509_sign");
  return cert;
}

}  // namespace

struct CertificateAuthority::Impl {
  PkeyPtr key;
  X509Ptr cert;               // signs leaves
  std::string intermediates;  // PEM appended after the leaf
  std::string root_pem;
  std::string trust_bundle;              // root_pem + extra trusted roots
  std::vector<std::string> trusted_der;  // DER of each root in trust_bundle (dedup)
  int64_t not_after = 0;                 // of the signing cert
  mutable std::mutex mu;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), root_pem_(impl_->root_pem) {}
CertificateAuthority::~CertificateAuthority() = default;

namespace {

// Parses key + certificate chain, checks they form a usable CA.
absl::StatusOr<std::unique_ptr<CertificateAuthority::Impl>> BuildImpl(const std::string& cert_pem,
                                                                      const std::string& key_pem,
                                                                      const std::string& cert_file,
                                                                      const std::string& key_file);

}  // namespace

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::LoadFromFiles(
    const std::string& cert_file, const std::string& key_file) {
  absl::StatusOr<std::string> cert = ReadFile(cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::unique_ptr<Impl>> impl = BuildImpl(*cert, *key, cert_file, key_file);
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(*impl)));
}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::LoadOrCreate(
    const std::string& state_dir) {
  std::string dir = state_dir + "/ca";
  if (absl::Status s = MakeDir(dir, 0700); !s.ok()) return s;
  std::string key_file = dir + "/root.key", cert_file = dir + "/root.pem";
  bool have_key = FileExists(key_file), have_cert = FileExists(cert_file);
  if (have_key && have_cert) {
    struct stat st;
    if (::stat(key_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      WEFT_LOG_WARN("CA key ", key_file, " was readable by group/others (mode ",
                    absl::StrCat(absl::Hex(st.st_mode & 0777)), "); setting 0600");
      ::chmod(key_file.c_str(), 0600);
    }
    absl::StatusOr<std::unique_ptr<CertificateAuthority>> ca = LoadFromFiles(cert_file, key_file);
    if (ca.ok())
      WEFT_LOG_INFO("CA: loaded root from ", cert_file, " (sha256 ", (*ca)->fingerprint(), ")");
    return ca;
  }
  if (have_key != have_cert) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CA state is incomplete: ", have_key ? cert_file : key_file, " is missing but ",
        have_key ? key_file : cert_file,
        " exists. Restore the missing file, or remove both to create a new root (every node "
        "will then need new certificates)"));
  }
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return SslError("generating the root key");
  absl::StatusOr<X509Ptr> cert = MakeRoot(key.get());
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_pem = PemOfKey(key.get());
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> cert_pem = PemOf(cert->get());
  if (!cert_pem.ok()) return cert_pem.status();
  // Key first: a crash in between leaves "key without cert", which the
  // check above reports instead of silently minting a second root.
  if (absl::Status s = WriteFileAtomic(key_file, *key_pem, 0600); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomic(cert_file, *cert_pem, 0644); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Impl>> impl = BuildImpl(*cert_pem, *key_pem, cert_file, key_file);
  if (!impl.ok()) return impl.status();
  auto ca = std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(*impl)));
  WEFT_LOG_INFO("CA: created new root ", cert_file, " (sha256 ", ca->fingerprint(), ")");
  return ca;
}

namespace {

absl::StatusOr<std::unique_ptr<CertificateAuthority::Impl>> BuildImpl(const std::string& cert_pem,
                                                                      const std::string& key_pem,
                                                                      const std::string& cert_file,
                                                                      const std::string& key_file) {
  auto impl = std::make_unique<CertificateAuthority::Impl>();
  BioPtr kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  impl->key.reset(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!impl->key) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_file, ": not a PEM private key (encrypted keys are not supported): ", SslErrors()));
  }
  BioPtr cbio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  std::vector<X509Ptr> chain;
  while (X509* c = PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr)) chain.emplace_back(c);
  ERR_clear_error();  // the loop ends on a "no start line" error
  if (chain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert_file, ": no PEM certificate found"));
  }
  X509* signing = chain.front().get();
  if (X509_check_ca(signing) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_file,
                     ": the first certificate is not a CA (needs basicConstraints CA:TRUE and "
                     "keyCertSign)"));
  }
  if (X509_check_private_key(signing, impl->key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        key_file, " does not match the public key of the first certificate in ", cert_file));
  }
  absl::StatusOr<int64_t> not_after = ToUnix(X509_get0_notAfter(signing));
  if (!not_after.ok()) return not_after.status();
  if (*not_after <= time(nullptr)) {
    return absl::FailedPreconditionError(
        absl::StrCat(cert_file, ": the CA certificate has expired"));
  }
  impl->not_after = *not_after;
  for (size_t i = 0; i < chain.size(); ++i) {
    absl::StatusOr<std::string> pem = PemOf(chain[i].get());
    if (!pem.ok()) return pem.status();
    if (i + 1 == chain.size()) {
      // The last certificate is the trust anchor; a lone self-signed CA is the
      // root itself, with nothing between it and the leaves.
      impl->root_pem = *pem;
      impl->trust_bundle = *pem;
      unsigned char* der = nullptr;
      int n = i2d_X509(chain[i].get(), &der);
      if (n <= 0) return SslError("i2d_X509");
      impl->trusted_der.emplace_back(reinterpret_cast<char*>(der), static_cast<size_t>(n));
      OPENSSL_free(der);
    } else {
      impl->intermediates += *pem;
    }
  }
  impl->cert = std::move(chain.front());
  return impl;
}

}  // namespace

absl::Status CertificateAuthority::AddTrustedRoots(const std::string& pem_file) {
  absl::StatusOr<std::string> pem = ReadFile(pem_file);
  if (!pem.ok()) return pem.status();
  BioPtr bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  std::vector<X509Ptr> certs;
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(c);
  ERR_clear_error();  // the loop ends on a "no start line" error
  if (certs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(pem_file, ": no PEM certificate found"));
  }
  // Check everything first: a bad file changes nothing.
  std::vector<std::pair<std::string, std::string>> add;  // (DER, PEM)
  int64_t now = time(nullptr);
  for (size_t i = 0; i < certs.size(); ++i) {
    X509* c = certs[i].get();
    std::string which = absl::StrCat(pem_file, ": certificate ", i + 1);
    if (X509_check_ca(c) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(which, " is not a CA (needs basicConstraints CA:TRUE)"));
    }
    absl::StatusOr<int64_t> not_after = ToUnix(X509_get0_notAfter(c));
    if (!not_after.ok()) return not_after.status();
    if (*not_after <= now)
      return absl::FailedPreconditionError(absl::StrCat(which, " has expired"));
    unsigned char* der = nullptr;
    int n = i2d_X509(c, &der);
    if (n <= 0) return SslError("i2d_X509");
    std::string d(reinterpret_cast<char*>(der), static_cast<size_t>(n));
    OPENSSL_free(der);
    absl::StatusOr<std::string> p = PemOf(c);
    if (!p.ok()) return p.status();
    add.emplace_back(std::move(d), std::move(*p));
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& [der, p] : add) {
    bool dup = false;
    for (const std::string& have : impl_->trusted_der) dup = dup || have == der;
    if (dup) {
      WEFT_LOG_INFO("CA: ", pem_file, ": a root already trusted (skipped)");
      continue;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(der.data(), der.size(), md, &len, EVP_sha256(), nullptr);
    WEFT_LOG_INFO("CA: also trusting root from ", pem_file, " (sha256 ",
                  absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), len)), ")");
    impl_->trusted_der.push_back(std::move(der));
    impl_->trust_bundle += p;
  }
  return absl::OkStatus();
}

const std::string& CertificateAuthority::trust_bundle_pem() const { return impl_->trust_bundle; }

int CertificateAuthority::trusted_root_count() const {
  return static_cast<int>(impl_->trusted_der.size());
}

std::string CertificateAuthority::fingerprint() const {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(impl_->cert.get(), EVP_sha256(), md, &len) != 1) return "?";
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), len));
}

absl::StatusOr<SignedCert> CertificateAuthority::SignCsr(const std::string& csr_pem,
                                                         const std::string& spiffe_id,
                                                         absl::Duration ttl) const {
  if (csr_pem.empty()) return absl::InvalidArgumentError("CSR is empty");
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate lifetime must be positive, got ", absl::FormatDuration(ttl)));
  }
  BioPtr bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    return absl::InvalidArgumentError(
        absl::StrCat("CSR is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----): ",
                     SslErrors()));
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (!pub)
    return absl::InvalidArgumentError(absl::StrCat("CSR has no usable public key: ", SslErrors()));
  if (!EVP_PKEY_is_a(pub, "EC")) {
    return absl::InvalidArgumentError(absl::StrCat("CSR key is ", EVP_PKEY_get0_type_name(pub),
                                                   "; the mesh requires ECDSA P-256 keys"));
  }
  char group[64] = {0};
  size_t glen = 0;
  if (EVP_PKEY_get_group_name(pub, group, sizeof group, &glen) != 1 ||
      std::string(group) != "prime256v1") {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("CSR key is on curve ", group[0] ? group : "?",
                                                   "; the mesh requires P-256 (prime256v1)"));
  }
  if (X509_REQ_verify(req.get(), pub) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CSR signature does not verify with its own public key (corrupted or forged request): ",
        SslErrors()));
  }
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req.get());
  bool has_san = false;
  std::vector<std::string> uris = UriSans(exts, &has_san);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  for (const std::string& u : uris) {
    if (u != spiffe_id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CSR asks for URI SAN \"", u, "\" but the request is for identity \"", spiffe_id, "\""));
    }
  }

  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  SignedCert out;
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return SslError("X509_set_version");
  if (absl::Status s = SetSerial(cert.get(), &out.serial_hex); !s.ok()) return s;
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("weft"), -1, -1, 0) != 1) {
    return SslError("X509_NAME_add_entry_by_txt");
  }
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(impl_->cert.get())) != 1) {
    return SslError("X509_set_issuer_name");
  }
  int64_t now = time(nullptr);
  int64_t not_after = now + absl::ToInt64Seconds(ttl);
  if (not_after > impl_->not_after) not_after = impl_->not_after;
  if (!ASN1_TIME_set(X509_getm_notBefore(cert.get()),
                     static_cast<time_t>(now - kBackdateSeconds)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(not_after))) {
    return SslError("ASN1_TIME_set");
  }
  out.not_after_unix = not_after;
  if (X509_set_pubkey(cert.get(), pub) != 1) return SslError("X509_set_pubkey");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth,clientAuth"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid"}}) {
    if (absl::Status s = AddExt(cert.get(), impl_->cert.get(), nid, value); !s.ok()) return s;
  }
  // Built by hand rather than from a config string, so no character of the
  // ID can be read as config syntax.
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  GENERAL_NAME* gn = GENERAL_NAME_new();
  ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
  if (!names || !gn || !ia5 ||
      ASN1_STRING_set(ia5, spiffe_id.data(), static_cast<int>(spiffe_id.size())) != 1) {
    GENERAL_NAMES_free(names);
    GENERAL_NAME_free(gn);
    ASN1_IA5STRING_free(ia5);
    return SslError("building the URI SAN");
  }
  GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
  sk_GENERAL_NAME_push(names, gn);
  int added = X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT);
  GENERAL_NAMES_free(names);
  if (added != 1) return SslError("adding the URI SAN");

  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (X509_sign(cert.get(), impl_->key.get(), EVP_sha256()) <= 0) return SslError("X509_sign");
  }
  absl::StatusOr<std::string> pem = PemOf(cert.get());
  if (!pem.ok()) return pem.status();
  out.cert_chain_pem = *pem + impl_->intermediates;
  out.root_pem = impl_->trust_bundle;
  return out;
}

}  // namespace weft::op
