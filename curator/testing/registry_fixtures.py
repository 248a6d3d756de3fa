"""Tiny fake downloads of every registry dataset, written from the datasets' documented layouts
(the conformance suite of the registry: tests/registry/test_native_layouts.py writes each with
:func:`curator.testing.native.write_tree`, ingests and harmonizes it).

Each entry lists real example paths (relative to the folder the download unpacks to) with
``I`` (an image), ``L(values...)`` (a label map with those raw values), ``M`` (a binary
structure mask), ``T(text)`` (a text file); ``X(...)`` wraps a file that exists in the download
but must *not* become part of this dataset (a distractor). ``cases`` is the number of cases
the dataset's layout must find. The table is written by hand from the layout facts in
../shared/reference/satds_datasets.json and the datasets' own documentation, independently of
the registry's YAML patterns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class F:
    path: str
    kind: str  # image | label | text
    values: Any = ()
    expected: bool = True  # False: a distractor the layout must not use as this dataset's label


def I(path: str) -> F:  # short names keep the table readable
    return F(path, "image")


def L(path: str, *values: int) -> F:
    return F(path, "label", tuple(values))


def M(path: str) -> F:
    return F(path, "label", (1,))


def T(path: str, text: str) -> F:
    return F(path, "text", text)


def X(f: F) -> F:
    return F(f.path, f.kind, f.values, expected=False)


@dataclass(frozen=True)
class Fixture:
    files: list[F]
    cases: int
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def msd(stem: str, train: dict[str, tuple[int, ...]], test: list[str], modality: dict[str, str] | None = None) -> list[F]:
    ds = {"name": stem, "modality": modality or {"0": "CT"}, "labels": {},
          "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train],
          "test": [f"./imagesTs/{c}.nii.gz" for c in test]}
    files = [T("dataset.json", json.dumps(ds))]
    for c, vals in train.items():
        files += [I(f"imagesTr/{c}.nii.gz"), L(f"labelsTr/{c}.nii.gz", *vals)]
    files += [I(f"imagesTs/{c}.nii.gz") for c in test]
    files.append(X(T(f"imagesTr/._{next(iter(train))}.nii.gz", "AppleDouble junk")))
    return files


def ts_case(sid: str, structures: list[str], distractors: Sequence[str] = ()) -> list[F]:
    return [I(f"{sid}/ct.nii.gz")] + [M(f"{sid}/segmentations/{s}.nii.gz") for s in structures] + \
        [X(M(f"{sid}/segmentations/{s}.nii.gz")) for s in distractors]


def brats(task: str, folder: str, cases: dict[str, tuple[int, ...]], seqs: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")) -> list[F]:
    out = []
    pre = "" if folder == "." else f"{folder}/"
    for c, vals in cases.items():
        out += [I(f"{pre}{c}/{c}-{s}.nii.gz") for s in seqs] + [L(f"{pre}{c}/{c}-seg.nii.gz", *vals)]
    return out


TS_OTHERS = ["face", "rib_left_1", "vertebrae_L1", "heart_myocardium", "gluteus_maximus_left", "liver"]

FIXTURES: dict[str, Fixture] = {
    "ACDC": Fixture([
        I("training/patient001/patient001_frame01.nii.gz"), L("training/patient001/patient001_frame01_gt.nii.gz", 1, 2, 3),
        I("training/patient001/patient001_frame12.nii.gz"), L("training/patient001/patient001_frame12_gt.nii.gz", 3, 2),
        I("training/patient001/patient001_4d.nii.gz"), T("training/patient001/Info.cfg", "ED: 1\nES: 12\n"),
        I("testing/patient101/patient101_frame01.nii.gz"), L("testing/patient101/patient101_frame01_gt.nii.gz", 1, 3),
        T("testing/patient101/Info.cfg", "ED: 1\nES: 14\nGroup: NOR\nHeight: 170.0\nNbFrame: 28\nWeight: 70.0\n")], 3),
    "AMOS22_CT": Fixture([
        I("imagesTr/amos_0001.nii.gz"), L("labelsTr/amos_0001.nii.gz", 1, 2, 3, 15),
        I("imagesVa/amos_0008.nii.gz"), L("labelsVa/amos_0008.nii.gz", 6, 10, 14),
        I("imagesTr/amos_0540.nii.gz"), X(L("labelsTr/amos_0540.nii.gz", 1, 6)), I("imagesTs/amos_0100.nii.gz")], 2),
    "AMOS22_MRI": Fixture([
        I("imagesTr/amos_0001.nii.gz"), X(L("labelsTr/amos_0001.nii.gz", 1, 2)),
        I("imagesTr/amos_0540.nii.gz"), L("labelsTr/amos_0540.nii.gz", 1, 6, 14),
        I("imagesVa/amos_0596.nii.gz"), L("labelsVa/amos_0596.nii.gz", 13)], 2),
    "ATLAS": Fixture([I("train/imagesTr/im0.nii.gz"), L("train/labelsTr/lb0.nii.gz", 1, 2),
                      I("train/imagesTr/im12.nii.gz"), L("train/labelsTr/lb12.nii.gz", 1)], 2),
    "ATLASR2": Fixture([
        I("Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"),
        M("Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"),
        T("Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.json", "{}"),
        T("Training/dataset_description.json", "{}")], 1),
    "AbdomenCT1K": Fixture([I("Images/Case_00001_0000.nii.gz"), L("Masks/Case_00001.nii.gz", 1, 2, 3, 4),
                            I("Images/Case_00002_0000.nii.gz"), L("Masks/Case_00002.nii.gz", 1)], 2),
    "BTCV": Fixture([I("RawData/Training/img/img0001.nii.gz"), L("RawData/Training/label/label0001.nii.gz", *range(1, 14)),
                     I("RawData/Testing/img/img0061.nii.gz")], 1),
    "BTCV_Cervix": Fixture([I("RawData/Training/img/0507688-Image.nii.gz"),
                            L("RawData/Training/label/0507688-Mask.nii.gz", 1, 2, 3, 4)], 1),
    "BraTS2023_GLI": Fixture(brats("GLI", ".", {"BraTS-GLI-00000-000": (1, 2, 3), "BraTS-GLI-00000-001": (2,)}), 8),
    "BraTS2023_MEN": Fixture(brats("MEN", ".", {"BraTS-MEN-00004-000": (1, 2, 3)}), 4),
    "BraTS2023_MET": Fixture(
        brats("MET", "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData", {"BraTS-MET-00001-000": (1, 2, 3)})
        + brats("MET", "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData_Additional", {"BraTS-MET-00232-000": (3,)},
                seqs=("t1n", "t1c", "t2f")), 7),
    "BraTS2023_PED": Fixture(brats("PED", ".", {"BraTS-PED-00001-000": (1, 3)}), 4),
    "BraTS2023_SSA": Fixture(brats("SSA", ".", {"BraTS-SSA-00002-000": (2, 3)}), 4),
    "BrainPTM": Fixture([
        I("sheba75_data_train/case_1/T1.nii.gz"), M("sheba75_data_train/case_1/brain_mask.nii.gz"),
        X(I("sheba75_data_train/case_1/Diffusion.nii.gz")),
        M("sheba75_tracts_train/case_1/OR_left.nii.gz"), M("sheba75_tracts_train/case_1/OR_right.nii.gz"),
        M("sheba75_tracts_train/case_1/CST_left.nii.gz"), M("sheba75_tracts_train/case_1/CST_right.nii.gz"),
        I("sheba75_data_train/case_2/T1.nii.gz"), M("sheba75_tracts_train/case_2/CST_left.nii.gz"),
        I("sheba75_data_test/case_61/T1.nii.gz")], 2),
    "Brain_Atlas": Fixture([I("a01.nii.gz"), L("a01-seg.nii.gz", 1, 2, 19, 44, 49, 95),
                            I("a02.nii.gz"), L("a02-seg.nii.gz", 20, 21, 74, 75)], 2),
    "CHAOS_CT": Fixture([I("Train_Sets/CT/1/DICOM_anon/"), L("Train_Sets/CT/1/Ground/", 255),
                         I("Train_Sets/CT/2/DICOM_anon/"), L("Train_Sets/CT/2/Ground/", 255)], 2),
    "CHAOS_MRI": Fixture([
        I("Train_Sets/MR/1/T1DUAL/DICOM_anon/InPhase/"), I("Train_Sets/MR/1/T1DUAL/DICOM_anon/OutPhase/"),
        L("Train_Sets/MR/1/T1DUAL/Ground/", 63, 126, 189, 252),
        I("Train_Sets/MR/1/T2SPIR/DICOM_anon/"), L("Train_Sets/MR/1/T2SPIR/Ground/", 63, 252)], 3),
    "CMRxMotion": Fixture([
        I("segmentation/data/P001-1/P001-1-ED.nii.gz"), L("segmentation/data/P001-1/P001-1-ED-label.nii.gz", 1, 2, 3),
        I("segmentation/data/P001-1/P001-1-ES.nii.gz"), L("segmentation/data/P001-1/P001-1-ES-label.nii.gz", 1, 2),
        I("segmentation/data/P001-2/P001-2-ED.nii.gz"), L("segmentation/data/P001-2/P001-2-ED-label.nii.gz", 3)], 3),
    "COVID19": Fixture([
        I("COVID-19-CT-Seg_20cases/coronacases_001.nii.gz"), L("Lung_and_Infection_Mask/coronacases_001.nii.gz", 1, 2, 3),
        I("COVID-19-CT-Seg_20cases/radiopaedia_org_covid-19-pneumonia-7_85703_0.nii.gz"),
        L("Lung_and_Infection_Mask/radiopaedia_org_covid-19-pneumonia-7_85703_0.nii.gz", 1, 2),
        X(L("Lung_Mask/coronacases_001.nii.gz", 1, 2))], 2),
    "CTPelvic1K": Fixture([
        I("CTPelvic1K_dataset6_data/dataset6_CLINIC_0001_data.nii.gz"),
        L("CTPelvic1K_dataset6_Anonymized_mask/dataset6_CLINIC_0001_mask_4label.nii.gz", 1, 2, 3, 4),
        I("CTPelvic1K_dataset7_data/dataset7_CLINIC_metal_0000_data.nii.gz"),
        L("CTPelvic1K_dataset7_mask/CLINIC_metal_0000_mask_4label.nii.gz", 1, 4)], 2),
    "CT_ORG": Fixture([I("OrganSegmentations/volume-0.nii.gz"), L("OrganSegmentations/labels-0.nii.gz", 1, 2, 3, 4, 5, 6),
                       I("OrganSegmentations/volume-27.nii.gz"), L("OrganSegmentations/labels-27.nii.gz", 1, 3)], 2),
    "Couinaud_Liver": Fixture([L("hepaticvessel_001.nii.gz", *range(1, 9)), L("hepaticvessel_004.nii.gz", 1, 5, 8)], 2),
    "CrossMoDA2021": Fixture([
        I("source_training/crossmoda_1_ceT1.nii.gz"), L("source_training/crossmoda_1_Label.nii.gz", 1, 2),
        I("target_training/crossmoda_106_hrT2.nii.gz")], 1),
    "DAP_Atlas": Fixture([L("AutoPET_0011f3deaf_10445.nii.gz", 1, 2, 11, 12, 15, 16, 102, 105, 144),
                          L("AutoPET_01140d52d8_56839.nii.gz", 13, 67, 68)], 2),
    "FLARE22": Fixture([I("images/FLARE22_Tr_0001_0000.nii.gz"), L("labels/FLARE22_Tr_0001.nii.gz", *range(1, 14))], 1),
    "FUMPE": Fixture([I("CT_scans/PAT001/"), L("GroundTruth/PAT001.mat", 1), I("CT_scans/PAT002/"), L("GroundTruth/PAT002.mat", 1)], 2),
    "FeTA2022": Fixture([
        I("feta_2.2/sub-001/anat/sub-001_rec-mial_T2w.nii.gz"), L("feta_2.2/sub-001/anat/sub-001_rec-mial_dseg.nii.gz", *range(1, 8)),
        I("feta_2.2/sub-021/anat/sub-021_rec-irtk_T2w.nii.gz"), L("feta_2.2/sub-021/anat/sub-021_rec-irtk_dseg.nii.gz", 3),
        I("feta22_Vienna/sub-001/anat/sub-001_rec-nmic_T2w.nii.gz"), L("feta22_Vienna/sub-001/anat/sub-001_rec-nmic_dseg.nii.gz", 1, 7)], 3),
    "HAN_Seg": Fixture([
        I("set_1/case_01/case_01_IMG_CT.nrrd"), X(I("set_1/case_01/case_01_IMG_MR_T1.nrrd")),
        M("set_1/case_01/case_01_OAR_Brainstem.seg.nrrd"), M("set_1/case_01/case_01_OAR_A_Carotid_L.seg.nrrd"),
        M("set_1/case_01/case_01_OAR_A_Carotid_R.seg.nrrd"), M("set_1/case_01/case_01_OAR_Eye_AL.seg.nrrd"),
        M("set_1/case_01/case_01_OAR_Eye_PL.seg.nrrd"), M("set_1/case_01/case_01_OAR_Glnd_Thyroid.seg.nrrd"),
        I("set_1/case_19/case_19_IMG_CT.nrrd"), X(M("set_1/case_19/case_19_OAR_Brainstem.seg.nrrd"))], 1),
    "Hecktor2022": Fixture([I("imagesTr/CHUM-001__CT.nii.gz"), I("imagesTr/CHUM-001__PT.nii.gz"), L("labelsTr/CHUM-001.nii.gz", 1, 2),
                            I("imagesTr/MDA-101__CT.nii.gz"), I("imagesTr/MDA-101__PT.nii.gz"), L("labelsTr/MDA-101.nii.gz", 1)], 4),
    "ISLES2022": Fixture([
        I("rawdata/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_adc.nii.gz"),
        I("rawdata/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_dwi.nii.gz"),
        I("rawdata/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_flair.nii.gz"),
        M("derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz")], 2),
    "Instance22": Fixture([I("train_2/data/001.nii.gz"), M("train_2/label/001.nii.gz"),
                           I("train_2/data/002.nii.gz"), M("train_2/label/002.nii.gz")], 2),
    "KiPA22": Fixture([I("train/image/1.nii.gz"), L("train/label/1.nii.gz", 1, 2, 3, 4)], 1),
    "KiTS23": Fixture([I("dataset/case_00000/imaging.nii.gz"), L("dataset/case_00000/segmentation.nii.gz", 1, 2, 3),
                       I("dataset/case_00001/imaging.nii.gz"), L("dataset/case_00001/segmentation.nii.gz", 1, 2),
                       T("dataset/kits23.json", json.dumps([{"case_id": "case_00000", "gender": "male",
                                                             "age_at_nephrectomy": 61}]))], 2),
    "LAScarQS22_Task1": Fixture([
        I("task1/train_data/train_1/enhanced.nii.gz"), M("task1/train_data/train_1/atriumSegImgMO.nii.gz"),
        M("task1/train_data/train_1/scarSegImgM.nii.gz"),
        I("task2/train_data/train_1/enhanced.nii.gz"), X(M("task2/train_data/train_1/atriumSegImgMO.nii.gz"))], 1),
    "LAScarQS22_Task2": Fixture([
        I("task1/train_data/train_1/enhanced.nii.gz"), X(M("task1/train_data/train_1/atriumSegImgMO.nii.gz")),
        I("task2/train_data/train_1/enhanced.nii.gz"), F("task2/train_data/train_1/atriumSegImgMO.nii.gz", "label", (255,)),
        I("task2/train_data/train_7/enhanced.nii.gz"), M("task2/train_data/train_7/atriumSegImgMO.nii.gz")], 2),
    "LNDb": Fixture([I("data0/LNDb-0001.mhd"), L("masks/LNDb-0001_rad1.mhd", 1, 2), L("masks/LNDb-0001_rad2.mhd", 1),
                     I("data1/LNDb-0101.mhd"), L("masks/LNDb-0101_rad3.mhd", 4)], 2),
    "LUNA16": Fixture([
        I("subset0/1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260.mhd"),
        L("seg-lungs-LUNA16/1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260.mhd", 3, 4, 5),
        I("subset9/1.3.6.1.4.1.14519.5.2.1.6279.6001.999.mhd")], 2),
    "MM_WHS_CT": Fixture([I("ct_train/ct_train_1001_image.nii.gz"), L("ct_train/ct_train_1001_label.nii.gz", 205, 420, 500, 550, 600, 820, 850),
                          I("mr_train/mr_train_1001_image.nii.gz"), X(L("mr_train/mr_train_1001_label.nii.gz", 205)),
                          I("ct_test/ct_test_2001_image.nii.gz")], 1),
    "MM_WHS_MRI": Fixture([I("mr_train/mr_train_1001_image.nii.gz"), L("mr_train/mr_train_1001_label.nii.gz", 205, 500, 600),
                           I("ct_train/ct_train_1001_image.nii.gz"), X(L("ct_train/ct_train_1001_label.nii.gz", 205))], 1),
    "MRSpineSeg": Fixture([I("train/MR/Case1.nii.gz"), L("train/Mask/mask_case1.nii.gz", *range(1, 20)),
                           I("train/MR/Case12.nii.gz"), L("train/Mask/mask_case12.nii.gz", 1, 11)], 2),
    "MSD_Cardiac": Fixture(msd("Heart", {"la_003": (1,), "la_004": (1,)}, ["la_001"], {"0": "MRI"}), 3),
    "MSD_Colon": Fixture(msd("Colon", {"colon_001": (1,)}, ["colon_002"]), 2),
    "MSD_HepaticVessel": Fixture(msd("HepaticVessel", {"hepaticvessel_001": (1, 2)}, []), 1),
    "MSD_Hippocampus": Fixture(msd("Hippocampus", {"hippocampus_001": (1, 2)}, [], {"0": "MRI"}), 1),
    "MSD_Liver": Fixture(msd("Liver", {"liver_0": (1, 2), "liver_1": (1,)}, ["liver_132"]), 3),
    "MSD_Lung": Fixture(msd("Lung", {"lung_001": (1,)}, []), 1),
    "MSD_Pancreas": Fixture(msd("Pancreas", {"pancreas_001": (1, 2)}, []), 1),
    "MSD_Prostate": Fixture([T("dataset.json", json.dumps({"modality": {"0": "T2", "1": "ADC"}, "training": [
        {"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"}], "test": []})),
        F("imagesTr/prostate_00.nii.gz", "image4d", 2), L("labelsTr/prostate_00.nii.gz", 1, 2)], 2),
    "MSD_Spleen": Fixture(msd("Spleen", {"spleen_2": (1,)}, ["spleen_1"]), 2),
    "MyoPS2020": Fixture([I("train25/myops_training_101_C0.nii.gz"), I("train25/myops_training_101_DE.nii.gz"),
                          I("train25/myops_training_101_T2.nii.gz"),
                          L("train25_myops_gd/myops_training_101_gd.nii.gz", 200, 500, 600, 1220, 2221)], 3),
    "NSCLC": Fixture([
        I("manifest-1586193031612/NSCLC-Radiomics/LUNG1-001/09-18-2008-StudyID-69331/0.000000-82046/"),
        M("Thoracic_Cavities/LUNG1-001/LUNG1-001_thor_cav_primary_reviewer.nii.gz"),
        M("Effusions/LUNG1-001/LUNG1-001_effusion_first_reviewer.nii.gz"),
        X(M("Effusions/LUNG1-001/LUNG1-001_effusion_second_reviewer.nii.gz"))], 1),
    "PARSE2022": Fixture([I("train/PA000005/image/PA000005.nii.gz"), M("train/PA000005/label/PA000005.nii.gz")], 1),
    "PDDCA": Fixture([
        I("PDDCA-1.4.1_part1/0522c0001/img.nrrd"), M("PDDCA-1.4.1_part1/0522c0001/structures/BrainStem.nrrd"),
        M("PDDCA-1.4.1_part1/0522c0001/structures/OpticNerve_L.nrrd"), M("PDDCA-1.4.1_part1/0522c0001/structures/OpticNerve_R.nrrd"),
        M("PDDCA-1.4.1_part1/0522c0001/structures/Mandible.nrrd"), T("PDDCA-1.4.1_part1/0522c0001/points/x.fcsv", "#"),
        I("PDDCA-1.4.1_part2/0522c0555/img.nrrd"), M("PDDCA-1.4.1_part2/0522c0555/structures/Chiasm.nrrd")], 2),
    "PROMISE12": Fixture([I("TrainingData_Part1/Case00.mhd"), M("TrainingData_Part1/Case00_segmentation.mhd"),
                          I("TrainingData_Part3/Case49.mhd"), M("TrainingData_Part3/Case49_segmentation.mhd")], 2),
    "Pancreas_CT": Fixture([I("Pancreas-CT/PANCREAS_0001/11-24-2015-PANCREAS0001-Pancreas-18957/Pancreas-99667/"),
                            M("TCIA_pancreas_labels-02-05-2017/label0001.nii.gz")], 1),
    "SEGA": Fixture([I("Dongyang/D1/D1.nrrd"), M("Dongyang/D1/D1.seg.nrrd"), I("KiTS/K1/K1.nrrd"), M("KiTS/K1/K1.seg.nrrd"),
                     I("Rider/R1 (AD)/R1.nrrd"), M("Rider/R1 (AD)/R1.seg.nrrd"), I("Rider/R2/R2.nrrd"), M("Rider/R2/R2.seg.nrrd")], 4),
    "SKI10": Fixture([I("training/image-001.mhd"), L("training/labels-001.mhd", 1, 2, 3, 4), X(M("training/roi-001.mhd")),
                      I("validation/image-061.mhd"), L("validation/labels-061.mhd", 1, 3)], 2),
    "SLIVER07": Fixture([I("training-scans/liver-orig001.mhd"), M("training-labels/liver-seg001.mhd")], 1),
    "SegRap2023_Task1": Fixture([
        I("SegRap2023_Training_Set_120cases/segrap_0001/image_contrast.nii.gz"),
        I("SegRap2023_Training_Set_120cases/segrap_0001/image.nii.gz"),
        L("SegRap2023_Training_Set_120cases_OneHot_Labels/Task001/segrap_0001.nii.gz", 1, 2, 6, 12, 20, 49, 51, 54),
        X(L("SegRap2023_Training_Set_120cases_OneHot_Labels/Task002/segrap_0001.nii.gz", 1, 2))], 1),
    "SegRap2023_Task2": Fixture([
        I("SegRap2023_Training_Set_120cases/segrap_0001/image_contrast.nii.gz"),
        X(L("SegRap2023_Training_Set_120cases_OneHot_Labels/Task001/segrap_0001.nii.gz", 1, 2)),
        L("SegRap2023_Training_Set_120cases_OneHot_Labels/Task002/segrap_0001.nii.gz", 1, 2)], 1),
    "SegTHOR": Fixture([I("train/Patient_01/Patient_01.nii.gz"), L("train/Patient_01/GT.nii.gz", 1, 2, 3, 4)], 1),
    "ToothFairy": Fixture([I("Dataset/P1/data.npy"), M("Dataset/P1/gt_alpha.npy"), X(M("Dataset/P1/gt_sparse.npy")),
                           I("Dataset/P2/data.npy"), X(M("Dataset/P2/gt_sparse.npy")),
                           T("splits.json", json.dumps({"train": ["P1"], "val": [], "test": ["P2"]}))], 2),
    "TotalSegmentator_Organs": Fixture(ts_case("s0000", ["liver", "kidney_left", "kidney_right", "spleen"], TS_OTHERS[:5])
                                       + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0000;63;m;I;ct;train\n")], 1),
    "TotalSegmentator_Vertebrae": Fixture(ts_case("s0001", ["vertebrae_L1", "vertebrae_L2", "sacrum"], ["face", "liver"])
                                          + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0001;50;f;I;ct;test\n")], 1),
    "TotalSegmentator_Cardiac": Fixture(ts_case("s0002", ["heart_myocardium", "aorta", "heart_atrium_left"], ["face", "liver"])
                                        + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0002;50;f;I;ct;val\n")], 1),
    "TotalSegmentator_Muscles": Fixture(ts_case("s0003", ["brain", "hip_left", "gluteus_maximus_left"], ["face", "rib_left_1"])
                                        + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0003;50;f;I;ct;train\n")], 1),
    "TotalSegmentator_Ribs": Fixture(ts_case("s0004", ["rib_left_1", "rib_right_1", "rib_left_12"], ["face", "liver"])
                                     + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0004;50;f;I;ct;train\n")], 1),
    "TotalSegmentator_v2": Fixture(ts_case("s0005", ["kidney_left", "kidney_right", "kidney_cyst_left", "vertebrae_S1",
                                                     "atrial_appendage_left", "costal_cartilages"])
                                   + [T("meta.csv", "image_id;age;gender;institute;study_type;split\ns0005;70;m;I;ct;train\n")], 1),
    "VerSe": Fixture([
        I("dataset-verse19training/rawdata/sub-verse004/sub-verse004_ct.nii.gz"),
        L("dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz", 20, 21, 22, 23, 24, 25, 28),
        T("dataset-verse19training/derivatives/sub-verse004/sub-verse004_seg-subreg_ctd.json", "[]"),
        I("dataset-01training/rawdata/sub-verse004/sub-verse004_dir-ax_ct.nii.gz"),
        L("dataset-01training/derivatives/sub-verse004/sub-verse004_dir-ax_seg-vert_msk.nii.gz", 1, 8, 19, 26),
        I("dataset-03test/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz"),
        L("dataset-03test/derivatives/sub-gl003/sub-gl003_dir-ax_seg-vert_msk.nii.gz", 7)], 3),
    "WMH_Segmentation_Challenge": Fixture([
        I("training/Utrecht/0/orig/FLAIR.nii.gz"), X(I("training/Utrecht/0/orig/T1.nii.gz")), I("training/Utrecht/0/pre/FLAIR.nii.gz"),
        L("training/Utrecht/0/wmh.nii.gz", 1, 2),
        I("training/Amsterdam/GE3T/100/orig/FLAIR.nii.gz"), L("training/Amsterdam/GE3T/100/wmh.nii.gz", 1),
        I("test/Singapore/51/orig/FLAIR.nii.gz"), L("test/Singapore/51/wmh.nii.gz", 2)], 3),
    "WORD": Fixture([I("imagesTr/word_0001.nii.gz"), L("labelsTr/word_0001.nii.gz", *range(1, 17)),
                     I("imagesVal/word_0101.nii.gz"), L("labelsVal/word_0101.nii.gz", 11),
                     I("imagesTs/word_0121.nii.gz"), L("labelsTs/word_0121.nii.gz", 15, 16)], 3),
    "autoPET": Fixture([
        I("PETCT_0011f3deaf/03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445/SUV.nii.gz"),
        I("PETCT_0011f3deaf/03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445/CTres.nii.gz"),
        X(I("PETCT_0011f3deaf/03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445/PET.nii.gz")),
        M("PETCT_0011f3deaf/03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445/SEG.nii.gz"),
        I("PETCT_01140d52d8/08-13-2005-NA-PET-CT Ganzkoerper  primaer mit KM-56839/SUV.nii.gz"),
        I("PETCT_01140d52d8/08-13-2005-NA-PET-CT Ganzkoerper  primaer mit KM-56839/CTres.nii.gz"),
        L("PETCT_01140d52d8/08-13-2005-NA-PET-CT Ganzkoerper  primaer mit KM-56839/SEG.nii.gz")], 4),
}
