from .image_folder import ImageFolderDataset
from .synthetic_coco import CLASSES, generate_synthetic_coco, mask_to_polygons
from .synthetic_image_folder import generate_synthetic_image_folder

__all__ = ['CLASSES', 'ImageFolderDataset', 'generate_synthetic_coco', 'generate_synthetic_image_folder',
           'mask_to_polygons']
