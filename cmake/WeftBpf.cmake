# BPF programs: .bpf.c -> .bpf.o (clang, CO-RE) -> .skel.h (bpftool), all in
# the build tree. weft_bpf_skeleton(NAME SRC) makes an INTERFACE target
# NAME_skel whose include dir holds NAME.skel.h.
find_program(BPF_CLANG clang REQUIRED)
find_program(BPFTOOL bpftool PATHS /usr/sbin /sbin REQUIRED)

set(WEFT_BPF_GEN ${CMAKE_BINARY_DIR}/bpf-gen)
file(MAKE_DIRECTORY ${WEFT_BPF_GEN})
set(WEFT_VMLINUX_H ${WEFT_BPF_GEN}/vmlinux.h)
add_custom_command(
  OUTPUT ${WEFT_VMLINUX_H}
  COMMAND ${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c > ${WEFT_VMLINUX_H}
  COMMENT "vmlinux.h from the running kernel's BTF")
add_custom_target(weft_vmlinux_h DEPENDS ${WEFT_VMLINUX_H})

function(weft_bpf_skeleton name src)
  set(obj ${WEFT_BPF_GEN}/${name}.bpf.o)
  set(skel ${WEFT_BPF_GEN}/${name}.skel.h)
  get_filename_component(src_abs ${src} ABSOLUTE)
  file(GLOB bpf_headers ${CMAKE_SOURCE_DIR}/bpf/include/*.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -O2 -g -target bpf -D__TARGET_ARCH_x86
            -I${WEFT_BPF_GEN} -I${CMAKE_SOURCE_DIR}/bpf/include
            -c ${src_abs} -o ${obj}
    DEPENDS ${src_abs} ${bpf_headers} ${WEFT_VMLINUX_H}
    COMMENT "clang -target bpf ${name}")
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}
    DEPENDS ${obj}
    COMMENT "bpftool gen skeleton ${name}")
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${WEFT_BPF_GEN} ${CMAKE_SOURCE_DIR}/bpf/include)
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
