# Stand-in for Slicer's extension config generation: writes the extension's metadata, with the defaults of
# the kit's real SlicerExtensionDescriptionSpec.cmake, to <build>/<extension>.s4ext-metadata.txt
# ("<name> <value>" lines, the form of an .s4ext description) so that the test can check it.

include(${SlicerStub_KIT_DIR}/${SlicerStub_TAG}/Extensions/CMake/SlicerExtensionDescriptionSpec.cmake)
slicer_extension_metadata_set_defaults(EXTENSION)

set(_slicerstub_metadata "")
foreach(_slicerstub_name IN LISTS Slicer_EXT_METADATA_NAMES)
  string(TOLOWER "${_slicerstub_name}" _slicerstub_key)
  string(APPEND _slicerstub_metadata "${_slicerstub_key} ${EXTENSION_${_slicerstub_name}}\n")
endforeach()
file(WRITE "${CMAKE_BINARY_DIR}/${EXTENSION_NAME}.s4ext-metadata.txt" "${_slicerstub_metadata}")
