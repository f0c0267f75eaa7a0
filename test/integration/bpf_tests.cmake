# BPF redirection integration test (root, network namespaces, bpffs pins).
add_executable(weft_bpf_redirect_test ${CMAKE_CURRENT_LIST_DIR}/bpf_redirect_test.cc)
target_link_libraries(weft_bpf_redirect_test PRIVATE weft_bpf_manager weft_bpf_headers weft_common
                      PkgConfig::LIBBPF)
add_test(NAME bpf_redirect COMMAND weft_bpf_redirect_test)
set_tests_properties(bpf_redirect PROPERTIES LABELS integration SKIP_RETURN_CODE 77 TIMEOUT 120
                     RUN_SERIAL TRUE)
