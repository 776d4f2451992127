"""File I/O: volumes (nibabel), transform files (ITK/ANTs/FSL), landmarks."""
