# Stand-in for Slicer's SlicerExtensionCPack.cmake. The test installs with `cmake --install` into a prefix
# instead of packaging, so only the package name is set here.
set(CPACK_PACKAGE_NAME ${EXTENSION_NAME})
