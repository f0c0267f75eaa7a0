# Every third-party piece is a Debian package; see scripts/install-deps.sh.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(OpenSSL REQUIRED)   # control plane only (operator CA); gRPC links it anyway
find_package(Catch2 2 REQUIRED)
find_package(Threads REQUIRED)

# BoringSSL from Debian's Android build: no CMake or pkg-config files, headers
# in /usr/include/android, libraries off the loader path (hence the RPATH).
set(BORINGSSL_INCLUDE_DIR /usr/include/android)
set(BORINGSSL_LIB_DIR /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android)
if(NOT EXISTS ${BORINGSSL_INCLUDE_DIR}/openssl/base.h)
  message(FATAL_ERROR "BoringSSL headers not found in ${BORINGSSL_INCLUDE_DIR} (android-libboringssl-dev)")
endif()
foreach(lib crypto ssl)
  add_library(BoringSSL::${lib} SHARED IMPORTED)
  set_target_properties(BoringSSL::${lib} PROPERTIES
    IMPORTED_LOCATION ${BORINGSSL_LIB_DIR}/lib${lib}.so
    INTERFACE_INCLUDE_DIRECTORIES ${BORINGSSL_INCLUDE_DIR}
    INTERFACE_LINK_OPTIONS "-Wl,-rpath,${BORINGSSL_LIB_DIR}")
endforeach()
set_property(TARGET BoringSSL::ssl PROPERTY INTERFACE_LINK_LIBRARIES BoringSSL::crypto)
